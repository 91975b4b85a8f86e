"""Build Wan2.1-I2V (DiT, umt5 text encoder, VAE, CLIP image encoder) and UniAnimate's pose guider, either
with random weights or from the files of a Wan2.1-I2V-14B-720P folder.

diffsynth picks a model class by hashing a checkpoint's key names and shapes, so it cannot recognise a
model of another size (a tiny test model). This module therefore constructs diffsynth's classes itself
from a `WanArchitecture` and loads every file with diffsynth's own readers and key converters, strictly
(every key used, none missing). The 14B model and a tiny one go through exactly the same code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from diffsynth.core.vram.initialization import skip_model_initialization
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.models.wan_video_image_encoder import WanImageEncoder, clip_xlm_roberta_vit_h_14
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE
from diffsynth.utils.state_dict_converters.wan_video_dit import WanVideoDiTStateDictConverter
from diffsynth.utils.state_dict_converters.wan_video_image_encoder import WanImageEncoderStateDictConverter
from diffsynth.utils.state_dict_converters.wan_video_vae import WanVideoVAEStateDictConverter
from torch import nn

from iasa.config import ConfigError
from iasa.errors import InputError
from iasa.tensor_files import read_sharded, read_tensors, read_weight_map
from iasa.video.config import (
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    WanArchitecture,
    WanModelConfig,
    architecture,
)
from iasa.video.latent_grid import PATCH_SIZE
from iasa.video.model_files import locate_model_files
from iasa.video.pose_guider import PoseGuider

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
ALL_PARTS = ("dit", "text_encoder", "vae", "image_encoder", "pose_guider")


class CheckpointKeyError(InputError, RuntimeError):
    """A checkpoint whose keys do not match the network built for it."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


# ---------------------------------------------------------------------------------------------- networks
def build_dit(arch: WanArchitecture) -> WanModel:
    return WanModel(
        dim=arch.dim, in_dim=LATENT_CHANNELS + CONDITION_CHANNELS, ffn_dim=arch.ffn_dim, out_dim=LATENT_CHANNELS,
        text_dim=arch.text_dim, freq_dim=arch.freq_dim, eps=1e-6, patch_size=(1, PATCH_SIZE, PATCH_SIZE), num_heads=arch.num_heads,
        num_layers=arch.num_layers, has_image_input=arch.image_input,
    )  # fmt: skip


def build_text_encoder(arch: WanArchitecture) -> WanTextEncoder:
    return WanTextEncoder(
        vocab=arch.text_vocab, dim=arch.text_dim, dim_attn=arch.text_attn_dim, dim_ffn=arch.text_ffn_dim,
        num_heads=arch.text_heads, num_layers=arch.text_layers, num_buckets=arch.text_buckets, shared_pos=False,
    )  # fmt: skip


def build_vae(arch: WanArchitecture) -> WanVideoVAE:
    # WanVideoVAE always builds the 96-channel network; build its shell without weights and put a network
    # of the wanted width inside (identical for the 14B size).
    with skip_model_initialization():
        vae = WanVideoVAE(z_dim=LATENT_CHANNELS)
    vae.model = VideoVAE_(dim=arch.vae_base_dim, z_dim=LATENT_CHANNELS).eval().requires_grad_(False)
    return vae


def build_image_encoder(arch: WanArchitecture) -> WanImageEncoder:
    # Same reason as build_vae: WanImageEncoder has no size arguments.
    with skip_model_initialization():
        encoder = WanImageEncoder()
    encoder.model, encoder.transforms = clip_xlm_roberta_vit_h_14(
        pretrained=False, return_transforms=True, return_tokenizer=False, dtype=torch.float32, device="cpu",
        image_size=arch.clip_image_size, patch_size=arch.clip_patch_size, vision_layers=arch.clip_layers,
        vision_heads=arch.clip_heads, vision_mlp_ratio=arch.clip_mlp_ratio,
    )  # fmt: skip
    return encoder


def build_pose_guider(arch: WanArchitecture) -> PoseGuider:
    return PoseGuider(dit_dim=arch.dim, hidden_channels=arch.pose_hidden_channels)


BUILDERS: dict[str, Callable[[WanArchitecture], nn.Module]] = {
    "dit": build_dit,
    "text_encoder": build_text_encoder,
    "vae": build_vae,
    "image_encoder": build_image_encoder,
    "pose_guider": build_pose_guider,
}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_random(part: str, arch: WanArchitecture, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A network with random weights created directly on `device` in `dtype` (no float32 copy of 14B)."""
    with torch.device(device), _default_dtype(dtype):
        module = BUILDERS[part](arch)
    return module.to(device=device, dtype=dtype).eval()


# ------------------------------------------------------------------------------------------------ loading
def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], origin: str) -> None:
    """Load every key into a module built without weights; any missing or unexpected key is an error."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise CheckpointKeyError(
            f"{origin} does not match {type(module).__name__}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}; is it the right file for model_size?"
        )
    for name, tensor in module.state_dict().items():
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            raise CheckpointKeyError(
                f"{origin}: {name} has shape {tuple(state_dict[name].shape)}, the network expects "
                f"{tuple(tensor.shape)}; is it the right file for model_size?"
            )
    module.load_state_dict(state_dict, strict=True, assign=True)


def _converted(part: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names -> diffsynth's module names, with diffsynth's own converters."""
    converters = {
        "dit": WanVideoDiTStateDictConverter,
        "vae": WanVideoVAEStateDictConverter,
        "image_encoder": WanImageEncoderStateDictConverter,
    }
    return converters[part](state_dict) if part in converters else state_dict


def load_from_files(
    part: str,
    paths: Sequence[Path],
    arch: WanArchitecture,
    device: torch.device,
    dtype: torch.dtype,
    index: Path | None = None,
) -> nn.Module:
    """One network from its file, or from safetensors shards (read as `index`, their index json, maps them)."""
    with skip_model_initialization():
        module = BUILDERS[part](arch)
    if len(paths) == 1 and index is None:
        state_dict = read_tensors(paths[0], device=device, dtype=dtype)
    else:
        weight_map = read_weight_map(index) if index is not None else None
        state_dict = read_sharded(paths, weight_map, device=device, dtype=dtype, origin=str(index))
    origin = paths[0].name if len(paths) == 1 else f"{len(paths)} files {paths[0].name}..."
    load_strict(module, _converted(part, state_dict), origin=f"{paths[0].parent}/{origin}")
    module = module.to(device=device, dtype=dtype).eval()
    if isinstance(module, WanModel):
        # RoPE tables are a plain attribute (not a buffer), so .to() leaves them where they were built;
        # keep them next to the weights instead of copying them at every step.
        module.freqs = tuple(table.to(device) for table in module.freqs)
    return module


# ------------------------------------------------------------------------------------------------ tokenizer
class ByteTokenizer:
    """Stand-in for the umt5 tokenizer when running with random weights: UTF-8 bytes as token ids."""

    def __init__(self, vocab_size: int, length: int) -> None:
        self.vocab_size, self.length = vocab_size, length

    def __call__(self, prompt: str, return_mask: bool = False, add_special_tokens: bool = True):
        ids = [1 + byte % (self.vocab_size - 1) for byte in prompt.encode("utf-8")][: self.length]
        padded = torch.zeros(1, self.length, dtype=torch.long)
        padded[0, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask = (torch.arange(self.length) < len(ids)).long()[None]
        return (padded, mask) if return_mask else padded


def load_tokenizer(folder: Path, length: int):
    """The umt5-xxl tokenizer from a local folder, padding every prompt to `length` tokens."""
    from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer

    return HuggingfaceTokenizer(name=str(folder), seq_len=length, clean="whitespace", local_files_only=True)


# ------------------------------------------------------------------------------------------------ assembly
@dataclass
class WanComponents:
    """The networks of one video model; parts not asked for are None."""

    architecture: WanArchitecture
    device: torch.device
    dtype: torch.dtype
    dit: WanModel | None = None
    text_encoder: WanTextEncoder | None = None
    tokenizer: Callable | None = None
    vae: WanVideoVAE | None = None
    # None also when the architecture has no image input.
    image_encoder: WanImageEncoder | None = None
    pose_guider: PoseGuider | None = None


def load_wan_components(config: WanModelConfig, parts: Sequence[str] = ALL_PARTS) -> WanComponents:
    """Networks for `config`: from config.model_dir, or random when it is null. The pose guider comes from the
    UniAnimate checkpoint (loaded by iasa.video.lora.apply_unianimate_checkpoint), so here they start random."""
    unknown = set(parts) - set(ALL_PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {ALL_PARTS}")
    arch = architecture(config.model_size)
    if not arch.image_input:  # no CLIP encoder: its tokens are empty (iasa.video.conditioning.reference_clip_tokens)
        parts = [part for part in parts if part != "image_encoder"]
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)
    components = WanComponents(architecture=arch, device=device, dtype=dtype)
    files = locate_model_files(config.model_dir, arch) if config.model_dir is not None else None
    sources = (
        {
            "dit": files.dit_shards,
            "text_encoder": (files.text_encoder,),
            "vae": (files.vae,),
            "image_encoder": (files.image_encoder,),
        }
        if files is not None
        else {}
    )
    for part in parts:
        if part in sources:
            module = load_from_files(part, sources[part], arch, device, dtype, files.dit_index if part == "dit" else None)
        else:
            module = build_random(part, arch, device, dtype)
        setattr(components, part, module)
    if "text_encoder" in parts:
        components.tokenizer = (
            load_tokenizer(files.tokenizer, arch.text_length)
            if files is not None and files.tokenizer is not None
            else ByteTokenizer(arch.text_vocab, arch.text_length)
        )
    return components
