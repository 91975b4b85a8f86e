"""DeepSpeed ZeRO stage 1 or 2 for the trained tensors (LoRA adapters, pose guider); the frozen base stays
replicated on every process, as under data parallel.

Chosen by the accelerate config (distributed_type DEEPSPEED: `accelerate launch --use_deepspeed
--zero_stage N`, or a DeepSpeed config file); the stage and the zero_optimization tuning keys come from it,
the batch, accumulation and clipping from the training config. ZeRO-3 and offload are refused (`zero_config`).
Each set of trained tensors with its own optimiser gets its own DeepSpeed engine (`ZeroUpdate`), whose
module is only a list of those tensors: distillation's generator and critic adapters are two engines over
disjoint LoRA weights of the one DiT, so the 14B base is held once and DeepSpeed never casts or broadcasts it.
Stage 1 splits the AdamW states over the processes, stage 2 also the reduced gradients; every process keeps
the full trained weights (DeepSpeed all-gathers them after each step), so the forward pass is unchanged.

Mixed precision is the run's (autocast, trained tensors float32, as under data parallel and FSDP):
DeepSpeed's own bf16/fp16 mode would store the trained adapters in 16 bits. Checkpoints hold each trained
tensor's AdamW state in torch's per-parameter layout (`ZeroOptimizerState`), the layout the data-parallel
and FSDP runs write, so a run resumes under any of the three.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from iasa.errors import InputError
from iasa.train.config import OptimConfig, RunConfig

# The first release tested; older ones may lack managed_gradient_accumulation=false for ZeRO-2 and would
# silently skip optimiser steps when gradients are accumulated.
MIN_DEEPSPEED = "0.19.8"
ZERO_STAGES = (1, 2)
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


class DeepSpeedSetupError(InputError, ValueError):
    """A DeepSpeed setting or installation this trainer cannot work with; the message says what to change."""


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _requested(config: dict[str, Any], key: str) -> Any:
    """A value the DeepSpeed config fixes (None where it is missing or "auto")."""
    value = config.get(key)
    return None if value == "auto" else value


def zero_config(
    deepspeed_config: dict[str, Any], run: RunConfig, optim: OptimConfig, num_processes: int
) -> dict[str, Any]:
    """The config of every engine: accelerate's DeepSpeed config (its zero_optimization section and tuning keys)
    with the batch, accumulation, clipping and precision of this trainer. Raises ValueError for a setting this
    trainer cannot honour, naming what to use instead."""
    source = copy.deepcopy(deepspeed_config)
    for section in ("optimizer", "scheduler"):
        if section in source:
            raise DeepSpeedSetupError(
                f"the DeepSpeed config has an '{section}' section; this trainer's AdamW and warm-up come from the "
                "optim.* keys of the training config: remove the section"
            )
    zero = source.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage == 3:
        raise DeepSpeedSetupError(
            "DeepSpeed ZeRO stage 3 partitions a module's weights and gathers them in that module's forward, which "
            "the training loops never call; to shard the frozen base, launch with an FSDP accelerate config "
            "(accelerate launch --use_fsdp ...), or use --zero_stage 1 or 2 for the trained tensors"
        )
    if stage not in ZERO_STAGES:
        raise DeepSpeedSetupError(
            f"DeepSpeed ZeRO stage {stage} is not supported: use --zero_stage 1 or 2 (stage 0 is plain data "
            "parallel: launch without --use_deepspeed)"
        )
    for offload in ("offload_optimizer", "offload_param"):
        if zero.get(offload, {}).get("device", "none") not in ("none", None):
            raise DeepSpeedSetupError(
                f"DeepSpeed {offload} is not supported by this trainer (its AdamW runs where the trained tensors are): "
                f"set the accelerate config's {offload}_device to none; ZeRO stage {stage} already splits the "
                "optimiser states over the processes"
            )
        zero.pop(offload, None)
    micro_batch = _requested(source, "train_micro_batch_size_per_gpu")
    if micro_batch not in (None, 1):
        raise DeepSpeedSetupError(
            f"the DeepSpeed config sets train_micro_batch_size_per_gpu={micro_batch}; every micro-batch here is "
            "one training clip: set it to 1 or auto"
        )
    # The training config decides these (as Accelerator arguments supersede accelerate's DeepSpeed config);
    # `accelerate config` writes accumulation and clipping values by default, so a difference is only noted.
    own = {
        "gradient_accumulation_steps": (run.gradient_accumulation_steps, "run.gradient_accumulation_steps"),
        "gradient_clipping": (optim.max_grad_norm, "optim.max_grad_norm"),
        "train_batch_size": (
            run.gradient_accumulation_steps * num_processes,
            "run.gradient_accumulation_steps x processes",
        ),
    }
    for key, (value, origin) in own.items():
        requested = _requested(source, key)
        if requested is not None and float(requested) != float(value):
            warnings.warn(f"the accelerate/DeepSpeed config's {key}={requested} is replaced by {value} ({origin})")
    config = dict(source)
    config.update(
        {key: value for key, (value, _) in own.items()},
        train_micro_batch_size_per_gpu=1,
        # The loops call step() once per accumulated batch, after backward() of every micro-batch.
        managed_gradient_accumulation=False,
        fp16={"enabled": False},
        bf16={"enabled": False},
        zero_optimization=zero,
        # AdamW from torch: DeepSpeed's optimiser list only names its own fused ones.
        zero_allow_untested_optimizer=True,
    )
    return config


class _TrainedTensors(nn.Module):
    """The module an engine is given: only the tensors it trains (they stay registered in their own modules too,
    which are the ones the training forward runs)."""

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        super().__init__()
        self.tensors = nn.ParameterList(parameters)


class ZeroOptimizerState:
    """state_dict() / load_state_dict() of a ZeRO-wrapped AdamW in torch's per-parameter layout: {"state": {index:
    {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}, full tensors on the CPU. state_dict is collective
    (each moment is summed from the processes' partitions). load_state_dict expects the trained tensors to hold the
    checkpoint's weights already (load_checkpoint restores them first): DeepSpeed's float32 master copy is set
    from them."""

    def __init__(self, zero_optimizer: Any, parameters: list[nn.Parameter], group_sizes: list[int]) -> None:
        self.zero_optimizer, self.parameters, self.group_sizes = zero_optimizer, parameters, group_sizes

    @property
    def _adamw(self) -> torch.optim.Optimizer:
        """The torch AdamW that steps this process's flat partitions (one per parameter group)."""
        return self.zero_optimizer.optimizer

    def _groups(self) -> list[list[nn.Parameter]]:
        groups, start = [], 0
        for size in self.group_sizes:
            groups.append(self.parameters[start : start + size])
            start += size
        return groups

    def _param_groups(self) -> list[dict[str, Any]]:
        groups, start = [], 0
        for group, size in zip(self._adamw.param_groups, self.group_sizes):
            groups.append(
                {
                    **{key: value for key, value in group.items() if key != "params"},
                    "params": list(range(start, start + size)),
                }
            )
            start += size
        return groups

    def state_dict(self) -> dict[str, Any]:
        from deepspeed.utils import safe_get_full_optimizer_state

        state = {}
        adamw = self._adamw
        for group_index, (group, parameters) in enumerate(zip(adamw.param_groups, self._groups())):
            (flat,) = group["params"]
            if flat not in adamw.state:  # never stepped, like a fresh torch optimiser
                continue
            offset = sum(self.group_sizes[:group_index])
            step = adamw.state[flat]["step"]
            for index, parameter in enumerate(parameters):
                moments = {key: safe_get_full_optimizer_state(parameter, key).detach().cpu() for key in ADAM_MOMENTS}
                state[offset + index] = {"step": step.detach().cpu().clone(), **moments}
        return {"state": state, "param_groups": self._param_groups()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from deepspeed.utils import (
            lazy_init_hp_params_optimizer_state,
            safe_set_full_fp32_param,
            safe_set_full_optimizer_state,
        )

        with torch.no_grad():
            for parameter in self.parameters:
                safe_set_full_fp32_param(parameter, parameter.detach().float())
        adamw = self._adamw
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(adamw.param_groups) or [len(g["params"]) for g in saved_groups] != self.group_sizes:
            raise ValueError(
                "the checkpoint's optimiser has other parameter groups than this run's (another LoRA or guider config?)"
            )
        flats = [group["params"][0] for group in adamw.param_groups]
        flat_state = {}
        for group_index, (saved, flat) in enumerate(zip(saved_groups, flats)):
            entries = [state_dict["state"][index] for index in saved["params"] if index in state_dict["state"]]
            if not entries:
                continue
            steps = {float(entry["step"]) for entry in entries}
            if len(steps) != 1 or len(entries) != len(saved["params"]):
                raise ValueError(
                    f"checkpoint optimiser group {group_index}: ZeRO keeps one AdamW step count per group, "
                    f"got {sorted(steps)} (or states for only some of its tensors)"
                )
            # Per-partition AdamW state as torch creates it; each tensor's share of the moments is filled in below.
            flat_state[group_index] = {
                "step": entries[0]["step"].clone(),
                **{key: torch.zeros_like(flat) for key in ADAM_MOMENTS},
            }
        groups = [{**saved, "params": [index]} for index, saved in enumerate(saved_groups)]
        adamw.load_state_dict({"state": flat_state, "param_groups": groups})
        for group_index, (saved, parameters, flat) in enumerate(zip(saved_groups, self._groups(), flats)):
            if group_index not in flat_state:
                continue
            lazy_init_hp_params_optimizer_state(parameters, flat, adamw.state)
            for index, parameter in zip(saved["params"], parameters):
                for key in ADAM_MOMENTS:
                    value = state_dict["state"][index][key].to(device=parameter.device, dtype=torch.float32)
                    safe_set_full_optimizer_state(parameter, value, key)


class ZeroUpdate:
    """AdamW with its warm-up schedule on one set of trained tensors, run by a DeepSpeed ZeRO engine.

    Per optimiser step: backward(loss / accumulation) for every micro-batch (stage 2 reduce-scatters the gradients
    as they come), then step() (reduce, clip by global norm, AdamW on this process's partition, all-gather)."""

    def __init__(
        self,
        parameters: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        config: dict[str, Any],
    ) -> None:
        import deepspeed
        from packaging.version import Version

        if Version(deepspeed.__version__) < Version(MIN_DEEPSPEED):
            raise DeepSpeedSetupError(
                f"deepspeed {deepspeed.__version__} is installed; this trainer needs deepspeed>={MIN_DEEPSPEED}"
            )
        self.parameters, self.scheduler = parameters, scheduler
        group_sizes = [len(group["params"]) for group in optimizer.param_groups]
        # DeepSpeed hooks the gradients of the tensors that require them when the engine is built; distillation
        # then freezes the adapter of the other phase, whose hooks simply do not fire.
        trainable = [parameter.requires_grad for parameter in parameters]
        for parameter in parameters:
            parameter.requires_grad_(True)
        self.engine, zero_optimizer, _, _ = deepspeed.initialize(
            model=_TrainedTensors(parameters), optimizer=optimizer, config=config
        )
        for parameter, flag in zip(parameters, trainable):
            parameter.requires_grad_(flag)
        self.optimizer = ZeroOptimizerState(zero_optimizer, parameters, group_sizes)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        """Returns the global gradient norm before clipping."""
        self.engine.step()
        self.scheduler.step()
        return float(self.engine.get_global_grad_norm())

    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def states(self, prefix: str = "") -> dict[str, Any]:
        """What a checkpoint saves, by name."""
        return {f"{prefix}optimizer": self.optimizer, f"{prefix}scheduler": self.scheduler}
