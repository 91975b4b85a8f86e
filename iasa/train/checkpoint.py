"""Resumable training checkpoints, written atomically, read without pickle.

<output_dir>/checkpoints/step-<N>/
    trainable.safetensors    every trained tensor (LoRA adapters, pose guider) by name
    optimizers.safetensors   optimiser and LR-scheduler state dicts, by name (iasa.train.state_file)
    rng-<rank>.safetensors   python, numpy, torch (CPU) and CUDA generator states of every process
    state.json               {"step": N, "run": {what the trained tensors were built with, e.g. "lora.alpha": 128}}
The folder is written as .step-<N>.partial and renamed when complete; the newest `keep` folders remain.
The files hold full tensors under every parallelism (FSDP shards and DeepSpeed ZeRO partitions are gathered;
see sharding.py and deepspeed_zero.py), so a run resumes under any of them.

A checkpoint is read whole (`read_checkpoint`) before anything is restored, so a damaged one changes nothing;
"auto" resume then falls back to the newest checkpoint that reads completely (`resume_checkpoint`).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file

from iasa.errors import InputError, MissingFileError
from iasa.tensor_files import IncompleteFileError, read_tensors, safetensors_keys
from iasa.train.sharding import full_optimizer_state, gather, shard_like, shard_optimizer_state
from iasa.train.state_file import load_state, save_state

_PREFIX = "step-"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZERS_FILE = "optimizers.safetensors"
STATE_FILE = "state.json"
# What checkpoints of an earlier version held: pickles, which could run code when loaded. They are not read.
PICKLED_OPTIMIZERS_FILE = "optimizers.pt"


class CheckpointError(InputError, ValueError):
    """A checkpoint that does not belong to this run or cannot be resumed."""


def rng_file(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    optimizers: dict[str, Any],
    keep: int,
    rank: int = 0,
    barrier: Callable[[], None] = lambda: None,
    run_settings: dict[str, Any] | None = None,
) -> Path:
    """Called by every process: tensors are trained weights by name, optimizers objects with state_dict()
    (optimisers, schedulers); process 0 writes those, every process its RNG state, `barrier` syncs them.
    Sharded (FSDP) tensors and optimiser states are gathered first, so the files hold full tensors.
    run_settings: what the trained tensors were built with (config key -> value), checked on resume."""
    tensors = gather(tensors)
    states = {
        name: full_optimizer_state(item) if isinstance(item, torch.optim.Optimizer) else item.state_dict()
        for name, item in optimizers.items()
    }
    root = output_dir / "checkpoints"
    final = root / f"{_PREFIX}{step:08d}"
    partial = root / f".{final.name}.partial"
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    save_state(partial / rng_file(rank), rng_state())
    if rank != 0:
        barrier()
        return final
    save_file({name: value.contiguous() for name, value in tensors.items()}, str(partial / TRAINABLE_FILE))
    save_state(partial / OPTIMIZERS_FILE, states)
    (partial / STATE_FILE).write_text(json.dumps({"step": step, "run": run_settings or {}}))
    shutil.rmtree(final, ignore_errors=True)
    barrier()
    partial.rename(final)
    for old in sorted(root.glob(f"{_PREFIX}*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders under output_dir that were renamed into place (written to the end), oldest first."""
    return [path.parent for path in sorted((output_dir / "checkpoints").glob(f"{_PREFIX}*/{STATE_FILE}"))]


def find_resume_checkpoint(output_dir: Path, resume: str) -> Path | None:
    """resume "auto": the newest complete checkpoint under output_dir (None if there is none); "none": None;
    anything else: that checkpoint folder, which must exist."""
    if resume == "none":
        return None
    if resume != "auto":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise MissingFileError(f"run.resume={resume} is not a checkpoint folder (no {STATE_FILE} in it)")
        return path
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


@dataclass
class CheckpointContents:
    """Everything one process restores from a checkpoint, read into memory."""

    path: Path
    step: int
    run_settings: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    states: dict[str, Any]
    rng: dict[str, Any]


def read_checkpoint(path: Path, rank: int = 0) -> CheckpointContents:
    """Read (and so check) every file of a checkpoint. IncompleteFileError for a damaged one; the RNG files of
    all processes are checked, so that every process of a run comes to the same verdict."""
    if (path / PICKLED_OPTIMIZERS_FILE).is_file() and not (path / OPTIMIZERS_FILE).is_file():
        raise CheckpointError(
            f"{path} was written by an earlier version of this trainer, whose pickled {PICKLED_OPTIMIZERS_FILE} and "
            "rng-*.pt files could run code when loaded, so it is not read; start the run afresh (run.resume=none, "
            "or another run.output_dir)"
        )
    try:
        saved = json.loads((path / STATE_FILE).read_text())
        step, run_settings = int(saved["step"]), dict(saved.get("run", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IncompleteFileError(f"{path / STATE_FILE} is incomplete or corrupt ({error})") from error
    for other in sorted(path.glob("rng-*.safetensors")):
        safetensors_keys(other, "checkpoint RNG file")
    return CheckpointContents(
        path=path,
        step=step,
        run_settings=run_settings,
        tensors=read_tensors(path / TRAINABLE_FILE, what="checkpoint file"),
        states=load_state(path / OPTIMIZERS_FILE, "checkpoint optimiser file"),
        rng=load_state(path / rng_file(rank), "checkpoint RNG file"),
    )


def check_run_settings(contents: CheckpointContents, run_settings: dict[str, Any]) -> None:
    """The checkpoint must come from a run whose trained tensors were built as this run's."""
    current = json.loads(json.dumps(run_settings))  # tuples -> lists, as stored
    for key in sorted(set(current) | set(contents.run_settings)):
        saved, now = contents.run_settings.get(key), current.get(key)
        if saved != now:
            raise CheckpointError(
                f"checkpoint {contents.path} was written with {key}={saved!r}, this run has {key}={now!r}: set "
                f"{key} back to resume it, or start afresh (run.resume=none, or another run.output_dir)"
            )


def apply_checkpoint(
    contents: CheckpointContents, parameters: dict[str, torch.Tensor], optimizers: dict[str, Any]
) -> int:
    """Restore weights in place, optimiser and scheduler states and this process's RNG; returns the step.
    Sharded (FSDP) parameters and their optimiser state take this process's shard of the full tensors."""
    saved, path = contents.tensors, contents.path
    missing, unexpected = sorted(set(parameters) - set(saved)), sorted(set(saved) - set(parameters))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match this run: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(was it written with another LoRA or guider config?)"
        )
    for name, parameter in parameters.items():
        if tuple(saved[name].shape) != tuple(parameter.shape):
            raise CheckpointError(
                f"checkpoint {path}: {name} has shape {tuple(saved[name].shape)}, this run's has {tuple(parameter.shape)} "
                "(another LoRA rank?)"
            )
    unknown = sorted(set(optimizers) - set(contents.states))
    if unknown:
        raise CheckpointError(f"checkpoint {path} holds no state for {unknown} (written by another training task?)")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(shard_like(saved[name], parameter))
    for name, item in optimizers.items():
        state = contents.states[name]
        item.load_state_dict(shard_optimizer_state(state, item) if isinstance(item, torch.optim.Optimizer) else state)
    restore_rng_state(contents.rng)
    return contents.step


def load_checkpoint(path: Path, parameters: dict[str, torch.Tensor], optimizers: dict[str, Any], rank: int = 0) -> int:
    """read_checkpoint + apply_checkpoint: the step of the restored checkpoint."""
    return apply_checkpoint(read_checkpoint(path, rank), parameters, optimizers)


def resume_checkpoint(
    output_dir: Path, resume: str, rank: int = 0, report: Callable[[str], None] = print
) -> CheckpointContents | None:
    """The checkpoint run.resume asks for, read whole. With "auto", a newest checkpoint that does not read
    completely (a file cut short by a full disk or a crash before it reached the disk) is reported and the next
    older one is tried; a checkpoint named explicitly must read completely."""
    if resume != "auto":
        path = find_resume_checkpoint(output_dir, resume)
        return None if path is None else read_checkpoint(path, rank)
    candidates = complete_checkpoints(output_dir)
    for newer, path in enumerate(reversed(candidates)):
        try:
            contents = read_checkpoint(path, rank)
        except IncompleteFileError as error:
            report(f"warning: checkpoint {path.name} cannot be resumed: {error}")
            continue
        if newer:
            report(f"warning: resuming from {path.name}, the newest checkpoint that reads completely")
        return contents
    if candidates:
        raise CheckpointError(
            f"no checkpoint under {output_dir / 'checkpoints'} reads completely (see the warnings above); "
            "remove the damaged ones or start afresh with run.resume=none"
        )
    return None
