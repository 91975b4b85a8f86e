"""Several named LoRA adapters on one DiT, so the 14B base weights are held once.

The fine-tune trains one adapter; distillation holds three on the same base: "teacher" (frozen, the
fine-tuned LoRA), "generator" (the few-step student) and "critic" (the fake score). Switching the active
adapter is a flag flip in every LoRA layer; no weights move.

Adapters are created, loaded and saved with iasa.video.lora (one file format for training and inference);
this module switches between them and copies weights from one to another.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file
from torch import nn

from iasa.errors import InputError, MissingFileError
from iasa.atomic_io import atomic_output
from iasa.tensor_files import read_tensors

_LORA_PARTS = ("lora_A", "lora_B")


class AdapterFileError(InputError, ValueError):
    """A LoRA file that does not exist or does not fit the model."""


def _lora_layers(dit: nn.Module) -> list[BaseTunerLayer]:
    return [module for module in dit.modules() if isinstance(module, BaseTunerLayer)]


def use_adapter(dit: nn.Module, name: str | None) -> None:
    """Route every LoRA layer through adapter `name`; None runs the bare base model.

    peft's set_adapter also flips requires_grad; trainability stays what set_trainable made it."""
    trainable = {name: parameter.requires_grad for name, parameter in dit.named_parameters()}
    for layer in _lora_layers(dit):
        if name is None:
            layer.enable_adapters(False)
        else:
            layer.enable_adapters(True)
            layer.set_adapter(name)
    for key, parameter in dit.named_parameters():
        parameter.requires_grad_(trainable[key])


def adapter_parameters(dit: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """The adapter's parameters by their file key (adapter name removed)."""
    found = {}
    for key, parameter in dit.named_parameters():
        parts = key.split(".")
        for index in range(len(parts) - 2):
            if parts[index] in _LORA_PARTS and parts[index + 1] == name:
                found[".".join(parts[: index + 1] + parts[index + 2 :])] = parameter
    return found


def set_trainable(modules: list[nn.Module], trainable: list[nn.Parameter]) -> None:
    """Freeze every parameter of `modules` except the ones listed."""
    keep = {id(parameter) for parameter in trainable}
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(id(parameter) in keep)


def adapter_state_dict(dit: nn.Module, name: str) -> dict[str, torch.Tensor]:
    return {key: parameter.detach().cpu().contiguous() for key, parameter in adapter_parameters(dit, name).items()}


def load_adapter_state_dict(dit: nn.Module, name: str, state_dict: dict[str, torch.Tensor], origin: str) -> None:
    """Copy weights into adapter `name`; keys must match exactly (rank and targets included)."""
    parameters = adapter_parameters(dit, name)
    missing = sorted(set(parameters) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(parameters))
    if missing or unexpected:
        raise AdapterFileError(
            f"{origin} does not fit the LoRA adapter '{name}': {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); check lora.rank and lora.targets"
        )
    with torch.no_grad():
        for key, parameter in parameters.items():
            value = state_dict[key]
            if value.shape != parameter.shape:
                raise AdapterFileError(
                    f"{origin}: {key} has shape {tuple(value.shape)}, the adapter has {tuple(parameter.shape)} "
                    "(is lora.rank the rank the file was trained with?)"
                )
            parameter.copy_(value.to(parameter.dtype))


def copy_adapter(dit: nn.Module, source: str, target: str) -> None:
    load_adapter_state_dict(dit, target, adapter_state_dict(dit, source), origin=f"adapter '{source}'")


def freeze_adapter_in_base_dtype(dit: nn.Module, name: str) -> None:
    """Store a frozen adapter in the base weights' dtype (bf16 halves a rank-128 14B adapter to 1.2 GB)."""
    base_dtype = next(parameter.dtype for key, parameter in dit.named_parameters() if ".lora_" not in key)
    for parameter in adapter_parameters(dit, name).values():
        parameter.requires_grad_(False)
        parameter.data = parameter.data.to(base_dtype)


def save_safetensors_atomic(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a safetensors file through a temporary file in the same folder and a rename."""
    with atomic_output(path) as temporary:
        save_file({key: value.contiguous() for key, value in state_dict.items()}, str(temporary))


def load_safetensors(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} file {path} does not exist; set its path in the config to a file the train stage wrote")
    return read_tensors(path, what=f"{what} file")
