"""What is computed once, sent to every process: motion, keypoints, the sparse layout, pose videos.

Rank 0 computes (EMAGE, keypoint alignment, the layout build) and the others receive. Nothing is pickled:
tensors travel as tensors, and what describes them (names, dtypes, shapes, the small non-array fields of a
dataclass) as a JSON header, so a receiver only ever parses JSON and fills tensors of dtypes it knows.

    broadcast_tensors({name: tensor} | None, parallel)  -> {name: tensor} on every rank
    broadcast_dataclass(value | None, cls, parallel)    -> a cls on every rank (WholeBodyKeypoints,
                                                           SmplxMotion, SparseLayout: array, tensor and
                                                           JSON-able fields)
    broadcast_module(module, parallel)                  rank 0's weights in every rank's copy, in place
                                                           (random initialisation differs per process)

The source keeps its own objects; the other ranks get copies whose tensors lie on the CPU (move them where
they are used, as with a layout loaded from disk).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from iasa.parallel.process_group import ParallelGroup, collective

T = TypeVar("T")

# The dtypes a header may name; anything else is refused before a byte is sent.
DTYPES: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
        torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    )
}  # fmt: skip


def _dtype_name(tensor: torch.Tensor, name: str) -> str:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise TypeError(f"{name!r} has dtype {tensor.dtype}, which broadcasts do not carry; use one of {sorted(DTYPES)}")
    return dtype


def _broadcast_json(value: Any, parallel: ParallelGroup, src: int) -> Any:
    """A JSON-able value from src to every rank (its length, then its UTF-8 bytes as a uint8 tensor)."""
    payload = json.dumps(value).encode() if parallel.rank == src else b""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=parallel.device)
    with collective(parallel, "broadcasting a header from rank 0"):
        dist.broadcast(length, src, group=parallel.group)
        data = torch.empty(int(length.item()), dtype=torch.uint8, device=parallel.device)
        if parallel.rank == src:
            data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(data, src, group=parallel.group)
    return json.loads(bytes(data.cpu().numpy()).decode()) if parallel.rank != src else value


def broadcast_tensors(
    tensors: dict[str, torch.Tensor] | None, parallel: ParallelGroup, src: int = 0
) -> dict[str, torch.Tensor]:
    """src's {name: tensor} on every rank; the others pass None and receive CPU tensors of the same names,
    dtypes, shapes and values."""
    if parallel.world_size == 1:
        if tensors is None:
            raise ValueError("a single process has nothing to receive: pass the tensors")
        return tensors
    if parallel.rank == src:
        if tensors is None:
            raise ValueError(f"rank {src} is the source: pass the tensors to send")
        header = [[name, _dtype_name(t, name), list(t.shape)] for name, t in tensors.items()]
    header = _broadcast_json(header if parallel.rank == src else None, parallel, src)
    received = {}
    for name, dtype_name, shape in header:
        dtype = DTYPES[dtype_name]  # a KeyError here would mean a header this module did not write
        if parallel.rank == src:
            buffer = tensors[name].detach().to(parallel.device).contiguous()
        else:
            buffer = torch.empty(shape, dtype=dtype, device=parallel.device)
        if buffer.numel():
            # Bytes, not values: every backend moves uint8, not every one moves bool or complex.
            with collective(parallel, f"broadcasting {name!r} from rank {src}"):
                dist.broadcast(buffer.reshape(-1).view(torch.uint8), src, group=parallel.group)
        if parallel.rank != src:
            received[name] = buffer.cpu()
    return tensors if parallel.rank == src else received


def broadcast_dataclass(value: T | None, cls: type[T], parallel: ParallelGroup, src: int = 0) -> T:
    """src's dataclass instance on every rank (the others pass None): numpy-array and tensor fields as
    tensors, tuple fields and JSON-able fields (numbers, strings, lists, dicts, None) in the header. The
    receivers build cls(**fields), so its own validation runs."""
    if parallel.rank == src and not isinstance(value, cls):
        raise TypeError(f"rank {src} is the source: pass a {cls.__name__}, got {type(value).__name__}")
    if parallel.world_size == 1:
        return value  # type: ignore[return-value]
    arrays: dict[str, torch.Tensor] = {}
    kinds: dict[str, list] = {}  # name -> [kind, value in the header or None]
    if parallel.rank == src:
        for name in (field.name for field in dataclasses.fields(cls) if field.init):
            item = getattr(value, name)
            if isinstance(item, (np.ndarray, torch.Tensor)):
                arrays[name] = torch.from_numpy(np.ascontiguousarray(item)) if isinstance(item, np.ndarray) else item
                kinds[name] = ["ndarray" if isinstance(item, np.ndarray) else "tensor", None]
            elif isinstance(item, tuple):
                kinds[name] = ["tuple", list(item)]
            else:
                kinds[name] = ["json", item]
    kinds = _broadcast_json(kinds if parallel.rank == src else None, parallel, src)
    arrays = broadcast_tensors(arrays if parallel.rank == src else None, parallel, src)
    if parallel.rank == src:
        return value  # type: ignore[return-value]
    fields = {}
    for name, (kind, item) in kinds.items():
        if kind == "ndarray":
            fields[name] = arrays[name].numpy()
        elif kind == "tensor":
            fields[name] = arrays[name]
        else:
            fields[name] = tuple(item) if kind == "tuple" else item
    return cls(**fields)


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, parallel: ParallelGroup, src: int = 0) -> None:
    """Every parameter and buffer of `module` takes src's values, in place (e.g. randomly initialised weights,
    which differ per process). The module lies on parallel.device in every process, built the same way."""
    if parallel.world_size == 1:
        return
    for name, tensor in module.state_dict(keep_vars=True).items():
        data = tensor.data if tensor.is_contiguous() else tensor.data.contiguous()
        if data.numel():
            with collective(parallel, f"broadcasting weight {name!r} from rank {src}"):
                dist.broadcast(data.reshape(-1).view(torch.uint8), src, group=parallel.group)
        if data is not tensor.data:
            tensor.data.copy_(data)
