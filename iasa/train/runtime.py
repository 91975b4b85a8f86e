"""What both training loops share: accelerate set-up, logging, how the trained tensors are updated (the
optimiser, its warm-up schedule and the gradient averaging of the parallelism) and resumable checkpoints.

The parallelism comes from the accelerate config:
- data parallel (default for accelerate launch / torchrun): every process holds the frozen base and the
  adapters, and the trained gradients are averaged with one all-reduce per parameter and step instead of
  wrapping the model in DDP: distillation switches which adapter is trained between phases, which DDP's fixed
  parameter set cannot follow, and the frozen 14B base needs no synchronisation;
- FSDP: the base and the trained tensors are sharded (iasa/train/sharding.py);
- DeepSpeed ZeRO stage 1 or 2: the base replicated as under data parallel, the optimiser states (and, stage 2,
  the gradients) of the trained tensors split over the processes, one engine per trained adapter
  (iasa/train/deepspeed_zero.py).
The loops see one interface for all three: `make_update` gives an object with backward(loss), step() -> grad
norm, learning_rate() and states() (what a checkpoint saves), and `autocast` the mixed-precision context.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, ContextManager

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, parse_flag_from_env, set_seed
from torch.distributed.tensor import DTensor

from iasa.config import config_to_yaml, validate_config
from iasa.train.checkpoint import apply_checkpoint, check_run_settings, resume_checkpoint, save_checkpoint
from iasa.train.config import OptimConfig, RunConfig
from iasa.train.deepspeed_zero import DeepSpeedSetupError, ZeroUpdate, uses_deepspeed, zero_config
from iasa.train.sharding import uses_fsdp

# Config names -> accelerate's ("no" would read as a boolean in YAML).
MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_accelerator(run: RunConfig) -> Accelerator:
    validate_config(run, "run.")  # load_config did already; here for configs built in code
    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")
    if deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise DeepSpeedSetupError(
            "the accelerate config asks for DeepSpeed but deepspeed is not installed: pip install -e .[deepspeed]"
        )
    if deepspeed and "RANK" not in os.environ:  # DeepSpeed would look for MPI instead
        raise DeepSpeedSetupError(
            "DeepSpeed runs need a launcher: accelerate launch --use_deepspeed --zero_stage 2 --num_processes N "
            "examples/IASA/train_iasa.py ... (or torchrun with ACCELERATE_USE_DEEPSPEED=true)"
        )
    output_dir = Path(run.output_dir)
    return Accelerator(
        # cpu=True lets torchrun / accelerate launch run CPU processes (gloo); accelerate only selects DeepSpeed
        # without it (DeepSpeed brings its own CPU backend).
        cpu=not torch.cuda.is_available() and not deepspeed,
        mixed_precision=MIXED_PRECISION[run.mixed_precision],
        log_with=None if run.report_to == "none" else run.report_to,
        project_dir=str(output_dir),
    )


def autocast(accelerator: Accelerator, run: RunConfig) -> ContextManager:
    """The forward pass's mixed precision. accelerate leaves it to DeepSpeed's config under DeepSpeed, which would
    store the trained tensors in 16 bits: autocast here instead, as accelerate does for the other parallelisms."""
    if not uses_deepspeed(accelerator):
        return accelerator.autocast()
    if run.mixed_precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(accelerator.device.type, dtype=AUTOCAST_DTYPE[run.mixed_precision])


def start_run(accelerator: Accelerator, config, run: RunConfig, project: str) -> None:
    """Seed every generator alike on all processes (so new LoRA weights are the same replica everywhere) and
    open the loggers. The resolved config is saved once the checkpoint to resume is known to fit
    (Checkpointer.resume)."""
    set_seed(run.seed)
    if run.report_to != "none":
        accelerator.init_trackers(project)


def seed_process(accelerator: Accelerator, run: RunConfig) -> None:
    """Give every process its own noise, timestep and dropout stream once the weights are built."""
    set_seed(run.seed + accelerator.process_index)


class TimeLimit:
    """run.time_limit_s, counted from the end of the first step: the first step compiles the kernels (the fast
    sparse kernels' Triton compile, torch.compile) and would otherwise eat a short budget. `reached()`, called once
    after every step, is the same on every process (process 0's clock decides), so all of them stop after the
    same step; the first call starts the clock and is never reached, so a run makes at least two steps."""

    def __init__(self, accelerator: Accelerator, limit_s: float | None) -> None:
        self.accelerator, self.limit_s, self.start = accelerator, limit_s, None

    def reached(self) -> bool:
        if self.limit_s is None:
            return False
        if self.start is None:
            self.start = time.monotonic()
            return False
        over = torch.tensor([time.monotonic() - self.start >= self.limit_s], device=self.accelerator.device)
        return bool(broadcast(over, from_process=0).item()) if self.accelerator.num_processes > 1 else bool(over.item())


def make_optimizer(parameters: list[torch.nn.Parameter], optim: OptimConfig, learning_rate: float):
    # The fused CUDA kernel needs no parameter-sized temporaries (2.5 GB per rank-128 adapter of the 14B DiT).
    fused = all(parameter.is_cuda for parameter in parameters)
    optimizer = torch.optim.AdamW(
        parameters, lr=learning_rate, betas=tuple(optim.betas), weight_decay=optim.weight_decay, fused=fused or None
    )
    warmup = max(optim.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)) if warmup else 1.0)
    return optimizer, scheduler


def average_gradients(accelerator: Accelerator, parameters: list[torch.nn.Parameter]) -> None:
    """Mean of every trained gradient over the processes (no-op on one process)."""
    if accelerator.num_processes == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            # SUM then divide: gloo (CPU runs) has no AVG reduction.
            torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
            parameter.grad.div_(accelerator.num_processes)


def clip_and_step(parameters: list[torch.nn.Parameter], optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip by global norm (when max_grad_norm > 0), step, zero the gradients; returns the norm before clipping.
    Sharded (FSDP) gradients give a DTensor norm over all shards; it is gathered to one number."""
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    else:
        norm = torch.nn.utils.get_total_norm([parameter.grad for parameter in parameters if parameter.grad is not None])
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


class AveragedUpdate:
    """AdamW with its warm-up schedule on one set of trained tensors, gradients averaged over the processes:
    one all-reduce per tensor (data parallel), or none where FSDP has reduce-scattered them in backward."""

    def __init__(
        self, accelerator: Accelerator, parameters: list[torch.nn.Parameter], optim: OptimConfig, learning_rate: float
    ) -> None:
        self.accelerator, self.parameters, self.max_grad_norm = accelerator, parameters, optim.max_grad_norm
        self.all_reduce = not uses_fsdp(accelerator)
        self.optimizer, self.scheduler = make_optimizer(parameters, optim, learning_rate)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        """Returns the global gradient norm before clipping."""
        if self.all_reduce:
            average_gradients(self.accelerator, self.parameters)
        return clip_and_step(self.parameters, self.optimizer, self.scheduler, self.max_grad_norm)

    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def states(self, prefix: str = "") -> dict[str, Any]:
        """What a checkpoint saves, by name."""
        return {f"{prefix}optimizer": self.optimizer, f"{prefix}scheduler": self.scheduler}


def make_update(
    accelerator: Accelerator,
    parameters: list[torch.nn.Parameter],
    optim: OptimConfig,
    learning_rate: float,
    run: RunConfig,
) -> AveragedUpdate | ZeroUpdate:
    """The updater of one set of trained tensors for the accelerate config's parallelism (all processes call it,
    in the same order: a DeepSpeed engine is built collectively)."""
    if not uses_deepspeed(accelerator):
        return AveragedUpdate(accelerator, parameters, optim, learning_rate)
    config = zero_config(accelerator.state.deepspeed_plugin.deepspeed_config, run, optim, accelerator.num_processes)
    optimizer, scheduler = make_optimizer(parameters, optim, learning_rate)
    stage = config["zero_optimization"]["stage"]
    accelerator.print(
        f"DeepSpeed ZeRO-{stage}: {len(parameters)} trained tensors, "
        f"optimiser state split over {accelerator.num_processes} processes"
    )
    return ZeroUpdate(parameters, optimizer, scheduler, config)


class Checkpointer:
    """Saves and restores the named trained tensors plus optimiser, scheduler and RNG states.

    run_settings: what the trained tensors are built with (config key -> value, e.g. "lora.alpha"); a checkpoint
    written with other values is refused on resume, naming the key."""

    def __init__(
        self,
        accelerator: Accelerator,
        run: RunConfig,
        tensors: dict[str, torch.Tensor],
        optimizers: dict,
        config: Any,
        run_settings: dict[str, Any],
    ) -> None:
        self.accelerator, self.run, self.tensors, self.optimizers = accelerator, run, tensors, optimizers
        self.config, self.run_settings = config, run_settings

    def resume(self) -> int:
        """The step to continue from (0 for a fresh run). The checkpoint is read and checked before anything is
        restored or written: a refused resume leaves the run folder (its config.yaml too) as it was."""
        contents = resume_checkpoint(
            Path(self.run.output_dir), self.run.resume, rank=self.accelerator.process_index, report=self.accelerator.print
        )
        step = 0
        if contents is not None:
            check_run_settings(contents, self.run_settings)
            step = apply_checkpoint(contents, self.tensors, self.optimizers)
            self.accelerator.print(f"resumed from {contents.path} at step {step}")
        if self.accelerator.is_main_process:
            output_dir = Path(self.run.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "config.yaml").write_text(config_to_yaml(self.config))
        return step

    def maybe_save(self, step: int, final: bool = False) -> None:
        if not (final or step % self.run.checkpoint_every == 0):
            return
        save_checkpoint(
            Path(self.run.output_dir), step, self.tensors, self.optimizers, self.run.keep_checkpoints,
            rank=self.accelerator.process_index, barrier=self.accelerator.wait_for_everyone,
            run_settings=self.run_settings,
        )  # fmt: skip


def end_step(
    steps_done: int, run: RunConfig, logs: dict, accelerator: Accelerator, checkpointer: Checkpointer, time_limit: TimeLimit
) -> bool:
    """The end of every training loop's step: log every run.log_every steps and at the last, checkpoint, and say
    whether the run ends here (run.max_steps done, or the time limit reached: saved, and said)."""
    last = steps_done == run.max_steps or time_limit.reached()
    if steps_done % run.log_every == 0 or last:
        accelerator.log(logs, step=steps_done)
    checkpointer.maybe_save(steps_done, final=last)
    if last and steps_done < run.max_steps:
        accelerator.print(f"run.time_limit_s={run.time_limit_s} reached after step {steps_done}: saved, stopping")
    return last
