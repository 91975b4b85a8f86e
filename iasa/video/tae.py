"""The tiny autoencoder for Wan 2.1 latents (TAEHV's taew2_1, github.com/madebyollin/taehv, MIT licence):
a clip decoder that is many times cheaper than the Wan VAE, run on the whole clip at once or streamed.

The network is a plain stack of 2D convolutions applied to every frame; time enters in three ways only:
- MemBlock: relu(convs(cat(x_t, x_{t-1})) + x_t), where x_{t-1} is the block's own input one time step
  earlier (zeros before the first). It is the only memory across time, so a stream carries one frame per
  MemBlock from step to step and its state does not grow with the stream.
- TGrow(stride) (decoder): a 1x1 convolution to stride x channels, read as stride consecutive frames.
- TPool(stride) (encoder): stride consecutive frames side by side in channels, a 1x1 convolution back.

Decoder, as `decoder.N` keys of the official file (c = decoder_channels, 256 128 64 64 in taew2_1):
    0 soft clamp 3 tanh(z / 3) | 1 conv 16 -> c0 | 2 relu
    3-5 MemBlock c0 | 6 upsample x2 | 7 TGrow(c0, 1) | 8 conv c0 -> c1 (no bias)
    9-11 MemBlock c1 | 12 upsample x2 | 13 TGrow(c1, 2) | 14 conv c1 -> c2 (no bias)
    15-17 MemBlock c2 | 18 upsample x2 | 19 TGrow(c2, 2) | 20 conv c2 -> c3 (no bias)
    21 relu | 22 conv c3 -> 3
(conv = 3x3, padding 1; a MemBlock's convolutions are conv.0, conv.2, conv.4: 2c -> c, c -> c, c -> c.)
Encoder, `encoder.N` (width e = 64): 0 conv 3 -> e | 1 relu | then per stage TPool(e, 2 / 2 / 1), a 3x3
stride-2 conv without bias, 3 MemBlocks (2-6, 7-11, 12-16) | 17 conv e -> 16.

Every latent frame grows into 4 frames, and the first 3 frames of a clip are dropped: T latent frames give
4 (T - 1) + 1 frames, Wan's count (latent frame 0 -> frame 0, latent frame k -> frames 4k - 3 .. 4k).
Latents are the ones the DiT sees (taew2_1 learned the normalised latent space, no mean or std to undo);
the network's pixels are in [0, 1] and are mapped here to [-1, 1] like the Wan VAE's.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from iasa.atomic_io import atomic_output
from iasa.errors import InputError, MissingFileError
from iasa.video.config import LATENT_CHANNELS

# The clip decoders of the pipeline (InferenceSpeedConfig.decoder): the Wan VAE, or this module's TAE.
CLIP_DECODERS = ("wan", "tae")
IMAGE_CHANNELS = 3
# The decoder clamps latents softly to (-3, 3) before its first convolution.
LATENT_SOFT_CLAMP = 3.0
MEMBLOCKS_PER_STAGE = 3
# Per stage: spatial x2, and time x1 / x2 / x2 in the decoder (Wan 2.1's x4), /2 / /2 / /1 in the encoder.
SPATIAL_SCALE = 2
DECODER_TIME_STRIDES = (1, 2, 2)
ENCODER_TIME_STRIDES = (2, 2, 1)
FRAMES_PER_LATENT_FRAME = math.prod(DECODER_TIME_STRIDES)
# Raw frames dropped at the start of a clip so that latent frame 0 gives one frame, as in Wan.
FRAMES_TRIMMED = FRAMES_PER_LATENT_FRAME - 1
# Index in the decoder of the convolution that sets each stage's width (its weight is (width, ...)).
DECODER_WIDTH_CONVS = (1, 8, 14, 20)
ENCODER_WIDTH_CONV = 0
DOWNLOAD_HINT = (
    "download taew2_1.pth from https://github.com/madebyollin/taehv and put it at {path} "
    "(or set speed.tae_checkpoint to where it is)"
)


@dataclass(frozen=True)
class TaeArchitecture:
    """Widths of a TAEHV for Wan 2.1 latents; everything else (depth, strides) is fixed."""

    latent_channels: int = LATENT_CHANNELS
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 64)
    encoder_channels: int = 64


TAE_ARCHITECTURES: dict[str, TaeArchitecture] = {
    "taew2_1": TaeArchitecture(),
    # The miniature's own decoder (config/miniature/tae.yaml, distilled from its VAE of base width 12, whose decoder
    # runs 48 channels at the latent resolution and 12 at full). taew2_1 is 2/3 as wide as the Wan VAE it mimics;
    # a plain 2D network with one frame of memory per block needs more than that ratio at this scale: 64 channels
    # at the latent end (that stage runs on 1/64 of the pixels) and 32 from there on. 0.72 M parameters (1.4 MB in
    # fp16); 47 GFLOP for 9 frames of 256 x 256 against the mini VAE decoder's 81 (torch FlopCounterMode), in one
    # batched pass over all frames instead of the VAE's causal loop over latent frames. The encoder width only
    # matters to a TaeEncoder; distill_tae writes the decoder alone.
    "mini": TaeArchitecture(decoder_channels=(64, 32, 32, 32), encoder_channels=32),
    # CPU tests and smoke runs.
    "tiny": TaeArchitecture(decoder_channels=(16, 8, 8, 8), encoder_channels=8),
}


class TaeCheckpointError(InputError, ValueError):
    """A TAE weight file that cannot be read or does not match the TAEHV layout."""


# ------------------------------------------------------------------------------------------------ blocks
def conv3x3(channels_in: int, channels_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / LATENT_SOFT_CLAMP) * LATENT_SOFT_CLAMP


class MemBlock(nn.Module):
    """Residual block that also sees its own input one time step earlier."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(2 * channels, channels), nn.ReLU(inplace=True),
            conv3x3(channels, channels), nn.ReLU(inplace=True),
            conv3x3(channels, channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        """x, past (n, c, h, w): this frame's input and the previous frame's input -> (n, c, h, w)."""
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + x, inplace=True)


class TemporalGrow(nn.Module):
    """Each frame -> `stride` consecutive frames (a 1x1 conv, its output channels read frame by frame)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ((b t), c, h, w) -> ((b t s), c, h, w)."""
        return rearrange(self.conv(x), "n (s c) h w -> (n s) c h w", s=self.stride)


class TemporalPool(nn.Module):
    """Every `stride` consecutive frames -> one (side by side in channels, then a 1x1 conv)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels * stride, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ((b t s), c, h, w) -> ((b t), c, h, w)."""
        return self.conv(rearrange(x, "(n s) c h w -> n (s c) h w", s=self.stride))


def decoder_layers(arch: TaeArchitecture) -> list[nn.Module]:
    widths = arch.decoder_channels
    layers: list[nn.Module] = [SoftClamp(), conv3x3(arch.latent_channels, widths[0]), nn.ReLU(inplace=True)]
    for stage, time_stride in enumerate(DECODER_TIME_STRIDES):
        layers += [MemBlock(widths[stage]) for _ in range(MEMBLOCKS_PER_STAGE)]
        layers += [
            nn.Upsample(scale_factor=SPATIAL_SCALE), TemporalGrow(widths[stage], time_stride),
            conv3x3(widths[stage], widths[stage + 1], bias=False),
        ]  # fmt: skip
    return layers + [nn.ReLU(inplace=True), conv3x3(widths[-1], IMAGE_CHANNELS)]


def encoder_layers(arch: TaeArchitecture) -> list[nn.Module]:
    width = arch.encoder_channels
    layers: list[nn.Module] = [conv3x3(IMAGE_CHANNELS, width), nn.ReLU(inplace=True)]
    for time_stride in ENCODER_TIME_STRIDES:
        layers += [TemporalPool(width, time_stride), conv3x3(width, width, stride=SPATIAL_SCALE, bias=False)]
        layers += [MemBlock(width) for _ in range(MEMBLOCKS_PER_STAGE)]
    return layers + [conv3x3(width, arch.latent_channels)]


def run_layers(
    layers: nn.Sequential, x: torch.Tensor, frames: int, past_inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Apply `layers` to x ((b t), c, h, w) of `frames` consecutive frames, all frames at once.

    past_inputs: per MemBlock (in order) its input at the time step before these frames, (b, c, h', w'),
    or () at the start of a clip (zeros). Returns the output and the MemBlocks' inputs at the last frame,
    copied so that they do not hold on to the whole step's activations."""
    remaining = iter(past_inputs)
    last_inputs = []
    for layer in layers:
        if isinstance(layer, MemBlock):
            sequence = rearrange(x, "(b t) c h w -> b t c h w", t=frames)
            before = next(remaining) if past_inputs else torch.zeros_like(sequence[:, 0])
            past = torch.cat([before[:, None], sequence[:, :-1]], dim=1)
            last_inputs.append(sequence[:, -1].clone())
            x = layer(x, rearrange(past, "b t c h w -> (b t) c h w"))
        else:
            x = layer(x)
            if isinstance(layer, TemporalGrow):
                frames *= layer.stride
            elif isinstance(layer, TemporalPool):
                frames //= layer.stride
    return x, tuple(last_inputs)


# ----------------------------------------------------------------------------------------------- decoder
@dataclass(frozen=True)
class TaeDecoderState:
    """What a streamed decode carries from one step to the next.

    block_inputs: per decoder MemBlock (in order) its input at the last frame decoded so far, (b, c, h', w');
    () before the first step. latent_frames: latent frames decoded so far."""

    block_inputs: tuple[torch.Tensor, ...] = ()
    latent_frames: int = 0


class TaeDecoder(nn.Module):
    """TAEHV's decoder for Wan 2.1 latents; parameters named as in the official file (decoder.N...)."""

    def __init__(self, arch: TaeArchitecture = TAE_ARCHITECTURES["taew2_1"]) -> None:
        super().__init__()
        self.arch = arch
        self.decoder = nn.Sequential(*decoder_layers(arch))

    def forward(
        self, latents: torch.Tensor, state: TaeDecoderState = TaeDecoderState()
    ) -> tuple[torch.Tensor, TaeDecoderState]:
        """latents (b, 16, t, h, w), the next t latent frames of a clip -> the frames they complete,
        (b, 3, f, 8 h, 8 w) on the [-1, 1] scale, not clamped (training sees the raw output), with
        f = 4 (t - 1) + 1 on the clip's first step and 4 t after, and the state for the next step."""
        batch, _, frames, _, _ = latents.shape
        if frames == 0:
            raise ValueError("a decode step needs at least one latent frame")
        parameter = next(self.parameters())
        x = rearrange(latents.to(device=parameter.device, dtype=parameter.dtype), "b c t h w -> (b t) c h w")
        x, block_inputs = run_layers(self.decoder, x, frames, state.block_inputs)
        video = rearrange(x, "(b t) c h w -> b c t h w", b=batch)
        if state.latent_frames == 0:
            video = video[:, :, FRAMES_TRIMMED:]
        return video * 2 - 1, TaeDecoderState(block_inputs, state.latent_frames + frames)


@torch.no_grad()
def decode_step(
    decoder: TaeDecoder, latents: torch.Tensor, state: TaeDecoderState
) -> tuple[torch.Tensor, TaeDecoderState]:
    """Stream a clip: latents (b, 16, t, h, w), its next t >= 1 latent frames, and the state of the frames
    before (TaeDecoderState() to start) -> the frames they complete, (b, 3, f, 8 h, 8 w) in [-1, 1] in the
    decoder's dtype (f = 4 (t - 1) + 1 on the first step, 4 t after), and the next state. Any split of a clip
    into steps gives the same frames as one step over the whole clip."""
    video, state = decoder(latents, state)
    return video.clamp_(-1, 1), state


@torch.no_grad()
def decode_clip(decoder: TaeDecoder, latents: torch.Tensor, latent_frames_per_call: int | None = None) -> torch.Tensor:
    """latents (b, 16, T, h, w) -> video (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1]: the whole clip in one
    call (None; fastest on a GPU, activations for every frame), or streamed `latent_frames_per_call` latent
    frames at a time (the same video; activations for that many frames only)."""
    total = latents.shape[2]
    per_call = total if latent_frames_per_call is None else latent_frames_per_call
    if per_call < 1:
        raise ValueError(f"latent_frames_per_call must be >= 1, got {latent_frames_per_call}")
    state, pieces = TaeDecoderState(), []
    for start in range(0, total, per_call):
        frames, state = decode_step(decoder, latents[:, :, start : start + per_call], state)
        pieces.append(frames)
    return torch.cat(pieces, dim=2)


# ----------------------------------------------------------------------------------------------- encoder
class TaeEncoder(nn.Module):
    """TAEHV's encoder for Wan 2.1 latents; parameters named as in the official file (encoder.N...)."""

    def __init__(self, arch: TaeArchitecture = TAE_ARCHITECTURES["taew2_1"]) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = nn.Sequential(*encoder_layers(arch))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (b, 3, F, H, W) in [-1, 1], H and W multiples of 8 -> latents (b, 16, ceil(F / 4), H / 8, W / 8)
        (the clip is padded at the end to a multiple of 4 frames with its last frame)."""
        batch, _, frames, _, _ = video.shape
        padding = -frames % FRAMES_PER_LATENT_FRAME
        video = torch.cat([video, video[:, :, -1:].expand(-1, -1, padding, -1, -1)], dim=2)
        parameter = next(self.parameters())
        x = rearrange(video.to(device=parameter.device, dtype=parameter.dtype), "b c t h w -> (b t) c h w")
        x, _ = run_layers(self.encoder, (x + 1) / 2, frames + padding, ())
        return rearrange(x, "(b t) c h w -> b c t h w", b=batch)


# ----------------------------------------------------------------------------------------------- files
def read_tae_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TAE weight file: the official .pth (a plain state dict, read weights-only) or a
    .safetensors; every failure is a TaeCheckpointError (or MissingFileError) naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"TAE checkpoint {path} does not exist; " + DOWNLOAD_HINT.format(path=path))
    try:
        if path.suffix == ".safetensors":
            state_dict = load_file(str(path), device="cpu")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, SafetensorError) as error:
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise TaeCheckpointError(
            f"cannot read TAE checkpoint {path} ({type(error).__name__}: {reason}); the file is truncated or not a "
            f"weight file: " + DOWNLOAD_HINT.format(path=path)
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise TaeCheckpointError(f"TAE checkpoint {path} is not a state dict of tensors; " + DOWNLOAD_HINT.format(path=path))
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TaeCheckpointError(
                f"TAE checkpoint {path}: tensor {name} holds NaN or Inf values; the file is corrupt: "
                + DOWNLOAD_HINT.format(path=path)
            )
    return state_dict


def tae_architecture_of(state_dict: dict[str, torch.Tensor], origin: str | Path) -> TaeArchitecture:
    """The widths of the TAE whose decoder.* (and, if present, encoder.*) tensors these are."""
    names = [f"decoder.{index}.weight" for index in DECODER_WIDTH_CONVS]
    absent = [name for name in names if name not in state_dict]
    if absent:
        raise TaeCheckpointError(f"{origin} lacks {', '.join(absent)}: not a TAEHV checkpoint; expected taew2_1.pth")
    encoder_key = f"encoder.{ENCODER_WIDTH_CONV}.weight"
    return TaeArchitecture(
        latent_channels=state_dict[names[0]].shape[1],
        decoder_channels=tuple(state_dict[name].shape[0] for name in names),
        encoder_channels=state_dict[encoder_key].shape[0] if encoder_key in state_dict else TaeArchitecture.encoder_channels,
    )


def check_layout(module: TaeDecoder | TaeEncoder, state_dict: dict[str, torch.Tensor], origin: str | Path) -> None:
    """Every key of `module` present with its shape, no other key; else a TaeCheckpointError naming them."""
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise TaeCheckpointError(
            f"{origin} does not match the TAEHV layout: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}; expected taew2_1.pth from https://github.com/madebyollin/taehv"
        )
    for name, tensor in expected.items():
        if state_dict[name].shape != tensor.shape:
            raise TaeCheckpointError(
                f"{origin}: {name} has shape {tuple(state_dict[name].shape)}, the TAEHV layout with widths "
                f"{module.arch} needs {tuple(tensor.shape)}"
            )


def load_tae_decoder(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, latent_channels: int = LATENT_CHANNELS
) -> TaeDecoder:
    """The decoder of a TAE weight file (taew2_1.pth, or one saved by save_tae_decoder), strictly: its
    decoder.* keys exactly, encoder.* keys all or none; widths are read from the file. Frozen, eval mode."""
    state_dict = read_tae_checkpoint(path)
    arch = tae_architecture_of(state_dict, path)
    if arch.latent_channels != latent_channels:
        raise TaeCheckpointError(
            f"{path} decodes {arch.latent_channels}-channel latents, the video model has {latent_channels}; "
            f"Wan 2.1 (and 2.2 14B) latents need taew2_1.pth"
        )
    decoder_part = {name: tensor for name, tensor in state_dict.items() if not name.startswith("encoder.")}
    encoder_part = {name: tensor for name, tensor in state_dict.items() if name.startswith("encoder.")}
    with torch.device("meta"):
        check_layout(TaeDecoder(arch), decoder_part, path)
        if encoder_part:
            check_layout(TaeEncoder(arch), encoder_part, path)
    decoder = TaeDecoder(arch)
    decoder.load_state_dict(decoder_part, strict=True)
    return decoder.to(device=device, dtype=dtype).eval().requires_grad_(False)


def random_tae_decoder(
    arch: TaeArchitecture = TAE_ARCHITECTURES["taew2_1"], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> TaeDecoder:
    """A decoder with random weights (benchmarks, smoke runs without model files), frozen, eval mode."""
    return TaeDecoder(arch).to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_tae_decoder(decoder: TaeDecoder, path: str | Path) -> None:
    """Write the decoder's weights as .safetensors in the official key layout (load_tae_decoder reads it)."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in decoder.state_dict().items()}
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary))
