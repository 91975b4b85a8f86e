"""FSDP (PyTorch FSDP2, `fully_shard`): the frozen base and the trained tensors sharded across processes.

Chosen by the accelerate config (distributed_type FSDP, i.e. ACCELERATE_USE_FSDP=true, which accelerate
launch sets for an FSDP config and which also reaches CPU runs under torchrun); the FSDP plugin options of
that config are not read: `shard_pose_dit` shards every module the training forward calls, each DiT block
on its own, so a process holds 1/N of the 14B base and all-gathers one block at a time. Every parameter
becomes a DTensor sharded on dim 0; FSDP reduce-scatters (averages) the gradients, so no manual all-reduce
runs.

Checkpoints and LoRA files hold full tensors whatever the parallelism: `gather` before writing,
`shard_like` / `shard_optimizer_state` when loading into sharded parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, parse_flag_from_env
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from iasa.train.model import PoseDiT


def uses_fsdp(accelerator: Accelerator) -> bool:
    """True for an FSDP accelerate config; accelerate itself reports MULTI_CPU for one on CPU, hence the flag."""
    return accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.num_processes > 1 and parse_flag_from_env("ACCELERATE_USE_FSDP")
    )


def shard_pose_dit(model: PoseDiT, device: torch.device, world_size: int) -> PoseDiT:
    """Shard the model's DiT and pose guider with FSDP2, in place; returns the model, now the FSDP root.

    Each child of the DiT and of the pose guider that holds parameters is one FSDP unit (each DiT block on its
    own: a process holds 1/N of the base and all-gathers one unit at a time). The model itself becomes the root:
    its forward is the flow prediction every training loss calls (training never calls the DiT's own forward;
    iasa.video.denoiser runs its submodules), and only a root forward lets FSDP free each unit after its forward
    and finish every unit's gradient reduction at the end of backward."""
    mesh = init_device_mesh(device.type, (world_size,))
    for root in (model.dit, model.pose_guider):
        direct = [name for name, _ in root.named_parameters(recurse=False)]
        if direct:
            raise ValueError(
                f"{type(root).__name__} has parameters outside its submodules ({direct[:3]}); no FSDP unit would gather them"
            )
        for child in root.children():
            for unit in child if isinstance(child, nn.ModuleList) else [child]:
                if any(True for _ in unit.parameters()):
                    fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU; collective for a DTensor (every process must call it, in the same order)."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def gather(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: full(tensor) for name, tensor in tensors.items()}


def shard_like(value: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """value (the full tensor, same on every process) laid out like parameter: its shard for a DTensor."""
    value = value.to(device=parameter.device, dtype=parameter.dtype)
    if not isinstance(parameter, DTensor):
        return value
    # src_data_rank=None: every process holds the full value already, so each just takes its own chunk.
    return distribute_tensor(value, parameter.device_mesh, parameter.placements, src_data_rank=None)


def _optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """In the order of the integer keys of optimizer.state_dict()["state"]."""
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict() with every sharded state tensor (AdamW's moments) gathered; collective."""
    state = optimizer.state_dict()
    state["state"] = {
        index: {key: full(value) if isinstance(value, DTensor) else value for key, value in entry.items()}
        for index, entry in state["state"].items()
    }
    return state


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The inverse of full_optimizer_state: per-parameter state tensors laid out like their parameter."""
    parameters = _optimizer_parameters(optimizer)
    state = dict(state)
    state["state"] = {
        index: {
            key: shard_like(value, parameters[index])
            if torch.is_tensor(value) and value.shape == parameters[index].shape
            else value
            for key, value in entry.items()
        }
        for index, entry in state["state"].items()
    }
    return state
