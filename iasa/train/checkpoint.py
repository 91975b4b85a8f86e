"""Resumable training checkpoints, written atomically.

<output_dir>/checkpoints/step-<N>/
    trainable.safetensors   every trained tensor (LoRA adapters, pose guider) by name
    optimizers.pt           optimiser and LR-scheduler state dicts, by name
    rng-<rank>.pt           python, numpy, torch (CPU) and CUDA generator states of every process
    state.json              {"step": N}
The folder is written as .step-<N>.partial and renamed when complete; the newest `keep` folders remain.
The files hold full tensors under every parallelism (FSDP shards and DeepSpeed ZeRO partitions are gathered;
see sharding.py and deepspeed_zero.py), so a run resumes under any of them.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from iasa.errors import MissingFileError
from iasa.train.sharding import full_optimizer_state, gather, shard_like, shard_optimizer_state

_PREFIX = "step-"


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
) -> Path:
    """Called by every process: tensors are trained weights by name, optimizers objects with state_dict()
    (optimisers, schedulers); process 0 writes those, every process its RNG state, `barrier` syncs them.
    Sharded (FSDP) tensors and optimiser states are gathered first, so the files hold full tensors."""
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
    torch.save(rng_state(), partial / f"rng-{rank}.pt")
    if rank != 0:
        barrier()
        return final
    save_file({name: value.contiguous() for name, value in tensors.items()}, str(partial / "trainable.safetensors"))
    torch.save(states, partial / "optimizers.pt")
    (partial / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    barrier()
    partial.rename(final)
    for old in sorted(root.glob(f"{_PREFIX}*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def find_resume_checkpoint(output_dir: Path, resume: str) -> Path | None:
    """resume "auto": the newest complete checkpoint under output_dir (None if there is none); "none": None;
    anything else: that checkpoint folder, which must exist."""
    if resume == "none":
        return None
    if resume != "auto":
        path = Path(resume)
        if not (path / "state.json").is_file():
            raise MissingFileError(f"run.resume={resume} is not a checkpoint folder (no state.json in it)")
        return path
    found = sorted((output_dir / "checkpoints").glob(f"{_PREFIX}*/state.json"))
    return found[-1].parent if found else None


def load_checkpoint(path: Path, parameters: dict[str, torch.Tensor], optimizers: dict[str, Any], rank: int = 0) -> int:
    """Restore weights in place, optimiser and scheduler states and this process's RNG; returns the step.
    Sharded (FSDP) parameters and their optimiser state take this process's shard of the full tensors."""
    saved = load_file(str(path / "trainable.safetensors"))
    missing, unexpected = sorted(set(parameters) - set(saved)), sorted(set(saved) - set(parameters))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match this run: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(was it written with another LoRA or guider config?)"
        )
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(shard_like(saved[name], parameter))
    states = torch.load(path / "optimizers.pt", weights_only=False)
    for name, item in optimizers.items():
        state = states[name]
        item.load_state_dict(shard_optimizer_state(state, item) if isinstance(item, torch.optim.Optimizer) else state)
    restore_rng_state(torch.load(path / f"rng-{rank}.pt", weights_only=False))
    return int(json.loads((path / "state.json").read_text())["step"])
