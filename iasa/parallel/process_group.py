"""The process group of a torchrun launch, with a timeout on every collective and errors that say why.

`torchrun --nproc_per_node N` starts N processes and tells each its place through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `parallel_group(config, device_type)` joins them:
NCCL with one GPU per process (cuda:LOCAL_RANK) on CUDA, gloo on the CPU (the tests); without WORLD_SIZE (a
plain `python` run) it is a group of one and no collective ever runs.

A process that dies or hangs must end the run, not stall it. Every collective waits at most
`ParallelConfig.collective_timeout_s` (the process group's timeout). gloo then raises in the waiting call
(at once when the peer's socket closes, after the timeout when the peer is alive but silent), and
`collective(parallel, what)` turns that into a `CollectiveError` naming the rank, the operation, the
timeout and the likely cause. NCCL runs collectives asynchronously: its watchdog tears the process down
after the same timeout (torchrun sets TORCH_NCCL_ASYNC_ERROR_HANDLING=1) and logs the collective it waited
for. Either way every rank exits with an error; under torchrun its agent also stops the other processes as
soon as one exits with an error, and reports the first failure.

The sequence-parallel group is the world group created here with that timeout. yunchang's
`set_seq_parallel_pg` was not used for it: it creates its groups with `new_group`'s default timeout
(30 min on gloo, 10 min on NCCL) whatever the world group's, and its Ulysses x ring x data-parallel split has
nothing to split while every process serves one Ulysses group.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from iasa.errors import InputError
from iasa.parallel.config import ParallelConfig

# What torchrun sets for every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class ParallelLaunchError(InputError, RuntimeError):
    """A multi-process launch that cannot work (missing torchrun variables, more processes than GPUs)."""


class CollectiveError(RuntimeError):
    """A collective that failed or timed out, most often because another process died or hangs."""


@dataclass(frozen=True)
class ParallelGroup:
    """This process's place among the processes of a run.

    rank in [0, world_size); device: where collectives and this process's model run (cuda:LOCAL_RANK with
    NCCL, the CPU with gloo); group: the process group, None for a single process; timeout_s: how long a
    collective waits for the others.
    """

    rank: int
    world_size: int
    device: torch.device
    timeout_s: float
    group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that computes what is computed once and writes the outputs."""
        return self.rank == 0


def single_process(
    device: torch.device | str = "cpu", timeout_s: float = ParallelConfig.collective_timeout_s
) -> ParallelGroup:
    """A group of one: sharding and gathering are identities, broadcasts return their input."""
    return ParallelGroup(rank=0, world_size=1, device=torch.device(device), timeout_s=timeout_s)


@contextmanager
def collective(parallel: ParallelGroup, what: str) -> Iterator[None]:
    """Run the collective(s) of the block; a failure becomes a CollectiveError that says what went wrong."""
    try:
        yield
    except CollectiveError:
        raise
    except RuntimeError as error:  # gloo raises plain RuntimeErrors; torch's DistError is one too
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CollectiveError(
            f"rank {parallel.rank} of {parallel.world_size}: {what} failed ({detail}). Another process has most "
            f"likely died or hangs (collectives wait {parallel.timeout_s:g} s, parallel.collective_timeout_s): "
            "its own log shows the cause"
        ) from error


def start_parallel_group(config: ParallelConfig, device_type: str) -> ParallelGroup:
    """Join the processes of a torchrun launch (or return a group of one without WORLD_SIZE).

    device_type "cuda": NCCL, this process on cuda:LOCAL_RANK; "cpu": gloo.
    """
    if config.collective_timeout_s <= 0:
        raise ParallelLaunchError(f"parallel.collective_timeout_s must be positive, got {config.collective_timeout_s}")
    if device_type not in ("cuda", "cpu"):
        raise ParallelLaunchError(f"multi-process runs need device 'cuda' or 'cpu', got {device_type!r}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return single_process("cuda" if device_type == "cuda" else "cpu", config.collective_timeout_s)
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ParallelLaunchError(
            f"WORLD_SIZE={world_size} is set but {', '.join(missing)} is not: launch multi-GPU runs with "
            "torchrun --nproc_per_node N (it sets all of them)"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu")
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ParallelLaunchError(
                f"process {rank} has LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} "
                "GPU(s): pass --nproc_per_node no larger than the GPU count"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    parallel = ParallelGroup(rank, world_size, device, config.collective_timeout_s)
    with collective(parallel, "joining the process group"):
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(seconds=config.collective_timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return replace(parallel, group=dist.group.WORLD)


@contextmanager
def parallel_group(config: ParallelConfig, device_type: str) -> Iterator[ParallelGroup]:
    """`start_parallel_group` for the block; the process group is destroyed at its end (error or not)."""
    parallel = start_parallel_group(config, device_type)
    try:
        yield parallel
    finally:
        if parallel.group is not None:
            dist.destroy_process_group()
