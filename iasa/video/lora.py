"""LoRA on the Wan DiT: peft injection, this project's LoRA and pose guider files, and UniAnimate's checkpoint.

This project's LoRA file: safetensors with peft's key names without the adapter name
(``blocks.0.self_attn.q.lora_A.weight``, what `get_peft_model_state_dict` gives) and the LoRA shape in the
metadata (rank, alpha, target modules), so a file alone is enough to rebuild the adapter. The metadata
also records the pose images it was trained on (``pose_style``, ``pose_channel_order``; iasa.pose.style),
so that inference draws the same ones by itself.

UniAnimate-Wan2.1-14B-Lora-12000.ckpt (a torch pickle of a flat dict) holds
``pipe.dit.<module>.lora_A.default.weight`` / ``lora_B`` (rank 128, alpha 128: update = B A) and the pose guider's two nets
``dwpose_embedding.*`` and ``randomref_embedding_pose.*``. Its LoRA is merged into the DiT's weights, so the
UniAnimate model becomes the base that this project's adapters train on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn

from iasa.atomic_io import atomic_output
from iasa.pose.style import pose_format_record, read_pose_format_record
from iasa.tensor_files import read_tensors, safetensors_metadata
from iasa.video.model_files import ModelFilesError
from iasa.video.assembly import CheckpointKeyError, load_strict
from iasa.video.config import LORA_TARGETS
from iasa.video.pose_guider import PoseGuider

UNIANIMATE_DIT_PREFIX = "pipe.dit."
UNIANIMATE_POSE_PREFIXES = ("dwpose_embedding.", "randomref_embedding_pose.")
LORA_FILE_FORMAT = "iasa-lora-v1"


def inject_lora(
    dit: nn.Module,
    rank: int,
    alpha: float,
    target_modules: Sequence[str] = LORA_TARGETS,
    adapter_name: str = "default",
) -> nn.Module:
    """Add a trainable LoRA adapter (B initialised to zero: the model is unchanged until trained). LoRA
    weights are float32 for stable optimisation; the frozen base keeps its dtype."""
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=True)
    dit = inject_adapter_in_model(config, dit, adapter_name=adapter_name)
    for name, parameter in dit.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()
    return dit


def lora_state_dict(dit: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's key names (no adapter name in the keys)."""
    return get_peft_model_state_dict(dit, adapter_name=adapter_name)


def save_lora(
    path: str | Path,
    dit: nn.Module,
    adapter_name: str = "default",
    tensors: dict[str, torch.Tensor] | None = None,
    *,
    pose_style: str,
) -> None:
    """Write the adapter to a .safetensors file atomically (temporary file, then rename).

    tensors: the adapter's weights under lora_state_dict's keys when they were already taken out of the DiT
    (e.g. gathered from FSDP shards, whose own state_dict holds one process's part); default: read from `dit`.
    pose_style: the style of the pose images it was trained on (iasa.pose.style), recorded with the
    channel order.
    """
    if tensors is None:
        tensors = lora_state_dict(dit, adapter_name)
    config = dit.peft_config[adapter_name]
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    metadata = {
        "format": LORA_FILE_FORMAT,
        "rank": str(config.r),
        "alpha": str(config.lora_alpha),
        "target_modules": json.dumps(sorted(config.target_modules)),
        **pose_format_record(pose_style),
    }
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def _lora_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ModelFilesError(
            f"LoRA file {path} does not exist; write one with examples/IASA/train_iasa.py (the train stage's "
            "lora.safetensors, or the distill stage's for the student) or set model.lora_path=null"
        )
    metadata = safetensors_metadata(path, "LoRA file")
    if metadata.get("format") != LORA_FILE_FORMAT:
        raise CheckpointKeyError(f"{path} is not an IASA LoRA file (metadata format {metadata.get('format')!r})")
    read_pose_format_record(metadata, origin=str(path))  # a channel order this code does not draw fails here
    return metadata


def lora_pose_style(path: str | Path) -> str | None:
    """The pose style a LoRA file was trained on (its metadata; the tensors are not read), or None for files
    written before the style was recorded."""
    return read_pose_format_record(_lora_metadata(Path(path)), origin=str(path))


def load_lora(path: str | Path, dit: nn.Module, adapter_name: str = "default") -> nn.Module:
    """Load a file written by save_lora, injecting the adapter first when the DiT has none. Every key of
    the file must land in the adapter and every adapter weight must come from the file."""
    path = Path(path)
    metadata = _lora_metadata(path)
    shape = {
        "rank": int(metadata["rank"]), "alpha": float(metadata["alpha"]),
        "targets": sorted(json.loads(metadata["target_modules"])),
    }  # fmt: skip
    if adapter_name not in getattr(dit, "peft_config", {}):
        dit = inject_lora(dit, shape["rank"], shape["alpha"], shape["targets"], adapter_name)
    else:  # an adapter built from the config: its rank, scale and layers must be the file's
        config = dit.peft_config[adapter_name]
        built = {"rank": config.r, "alpha": float(config.lora_alpha), "targets": sorted(config.target_modules)}
        differing = [f"{key} {shape[key]} (the adapter has {built[key]})" for key in shape if shape[key] != built[key]]
        if differing:
            raise CheckpointKeyError(
                f"{path} was trained with LoRA {', '.join(differing)}; set lora.rank, lora.alpha and lora.targets "
                "to the file's values"
            )
    tensors = read_tensors(path, what="LoRA file")
    expected = set(lora_state_dict(dit, adapter_name))
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise CheckpointKeyError(
            f"{path} does not fit the adapter: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}); was it trained for this model_size?"
        )
    set_peft_model_state_dict(dit, tensors, adapter_name=adapter_name)
    return dit


def load_pose_guider(path: str | Path, pose_guider: PoseGuider) -> None:
    """Load a pose guider file the train stage wrote (pose_guider.safetensors) strictly, in the guider's dtype."""
    path = Path(path)
    if not path.is_file():
        raise ModelFilesError(
            f"pose guider file {path} does not exist; set model.pose_guider_path to the pose_guider.safetensors of "
            "the train stage that the LoRA comes from, or to null for UniAnimate's"
        )
    reference = next(pose_guider.parameters())
    state = read_tensors(path, what="pose guider file")
    state = {key: tensor.to(device=reference.device, dtype=reference.dtype) for key, tensor in state.items()}
    load_strict(pose_guider, state, origin=str(path))


def merge_lora_pairs(dit: nn.Module, pairs: dict[str, dict[str, torch.Tensor]], strength: float, origin: str) -> None:
    """W += strength * B A for every module name -> {"A": (r, in), "B": (out, r)} (base weight of peft layers)."""
    for module_name, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise CheckpointKeyError(f"{origin}: {module_name} has LoRA parts {sorted(pair)}, expected A and B")
        try:
            module = dit.get_submodule(module_name)
        except AttributeError as error:
            raise CheckpointKeyError(f"{origin}: LoRA for {module_name}, which the DiT does not have") from error
        linear = getattr(module, "base_layer", module)
        update = pair["B"].float().to(linear.weight.device) @ pair["A"].float().to(linear.weight.device)
        if update.shape != linear.weight.shape:
            raise CheckpointKeyError(
                f"{origin}: LoRA for {module_name} gives {tuple(update.shape)}, weight is {tuple(linear.weight.shape)}"
            )
        with torch.no_grad():
            linear.weight.copy_((linear.weight.float() + strength * update).to(linear.weight.dtype))


def apply_unianimate_checkpoint(
    path: str | Path, dit: nn.Module, pose_guider: PoseGuider, lora_strength: float = 1.0
) -> None:
    """Merge UniAnimate's LoRA into the DiT and load the pose guider strictly."""
    path = Path(path)
    if not path.is_file():
        raise ModelFilesError(
            f"UniAnimate checkpoint {path} does not exist; download UniAnimate-Wan2.1-14B-Lora-12000.ckpt "
            "(ZheWang123/UniAnimate-DiT on Hugging Face) there, or set model.unianimate_checkpoint"
        )
    state_dict = read_tensors(path, what="UniAnimate checkpoint")
    pairs: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    pose_state, unknown = {}, []
    for key, tensor in state_dict.items():
        if key.startswith(UNIANIMATE_POSE_PREFIXES):
            pose_state[key] = tensor
        elif key.startswith(UNIANIMATE_DIT_PREFIX) and (".lora_A." in key or ".lora_B." in key):
            module_name, part = key[len(UNIANIMATE_DIT_PREFIX) :].split(".lora_")
            pairs[module_name][part[0]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointKeyError(f"{path}: keys that are neither DiT LoRA nor pose guider: {unknown[:5]} ({len(unknown)})")
    if not pairs:
        raise CheckpointKeyError(f"{path}: no '{UNIANIMATE_DIT_PREFIX}*.lora_A/B' keys; not a UniAnimate LoRA checkpoint")
    merge_lora_pairs(dit, pairs, lora_strength, origin=str(path))
    reference = next(pose_guider.parameters())
    pose_state = {key: tensor.to(device=reference.device, dtype=reference.dtype) for key, tensor in pose_state.items()}
    load_strict(pose_guider, pose_state, origin=str(path))
