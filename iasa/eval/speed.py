"""Generation speed in frames per second, on a GPU or on a capped number of CPU threads.

GPU work is asynchronous: the clock is read only after ``torch.cuda.synchronize`` has waited for the
queued kernels, before the timed calls start and after each. Warm-up calls run first, untimed (kernel
compilation, cuDNN autotuning, allocator growth). On the CPU, ``cpu_threads`` caps torch's intra-op
threads for the measurement (the real-time claim of the demo is on 2 cores) and restores the previous
setting afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from time import perf_counter
from typing import Any, Callable, Iterator

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with torch.set_num_threads(count), then restore the previous count."""
    if count < 1:
        raise ValueError(f"thread count must be >= 1, got {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on `device` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synchronized_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one fn() call, from an idle device to its kernels' end."""
    synchronize(device)
    start = perf_counter()
    fn()
    synchronize(device)
    return perf_counter() - start


def frames_per_second(
    generate: Callable[[], Any], frames: int, device: str | torch.device, repeats: int = 3, warmup: int = 1,
    cpu_threads: int | None = None,
) -> float:  # fmt: skip
    """frames x repeats / seconds taken by ``repeats`` calls of generate() (each makes ``frames`` frames on
    ``device``), after ``warmup`` untimed calls; with cpu_threads, under torch_threads(cpu_threads)."""
    device = torch.device(device)
    if frames < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"frames and repeats must be >= 1 and warmup >= 0, got {frames}, {repeats}, {warmup}")
    if cpu_threads is not None and device.type != "cpu":
        raise ValueError(f"cpu_threads caps CPU threads; the device is {device}")
    with torch_threads(cpu_threads) if cpu_threads is not None else nullcontext():
        for _ in range(warmup):
            generate()
        synchronize(device)
        start = perf_counter()
        for _ in range(repeats):
            generate()
            synchronize(device)
        elapsed = perf_counter() - start
    return frames * repeats / elapsed

