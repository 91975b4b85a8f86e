"""Nested training state (optimiser and scheduler state dicts, generator states) in one safetensors file,
without pickle: the tensors (and NumPy arrays) are the file's tensors, everything else (numbers, strings,
the nesting of dicts, lists and tuples) is JSON in its metadata, with each tensor by name.

    {"state": {0: {"step": tensor, ...}}, "param_groups": [{"betas": (0.9, 0.999), ...}]}
    -> tensors {"state/0/step": ..., ...}
       metadata "structure": {"dict": [["state", {"dict": [[0, {"dict": [["step", {"tensor": "state/0/step"}]]}]]}]], ...}

Dicts are stored as [key, value] pairs so integer keys stay integers; tuples stay tuples. Loading builds only
these plain types, so a crafted file can at worst hold wrong numbers, never run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from iasa.atomic_io import atomic_output
from iasa.tensor_files import TensorFileError, read_tensors, safetensors_metadata

STRUCTURE_KEY = "structure"
FORMAT_KEY = "format"
FORMAT = "iasa-state-v1"
_PRIMITIVES = (bool, int, float, str, type(None))


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"tensor": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {"ndarray": path}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, dict):
        if not all(isinstance(key, (str, int)) for key in value):
            raise TypeError(f"{path or 'state'}: dict keys must be str or int, got {sorted(map(type, value), key=str)}")
        return {"dict": [[key, _encode(item, f"{path}/{key}", tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode(item, f"{path}/{index}", tensors) for index, item in enumerate(value)]}
    raise TypeError(f"{path or 'state'}: cannot store a {type(value).__name__} without pickle")


def _decode(node: Any, tensors: dict[str, torch.Tensor], origin: Path) -> Any:
    if isinstance(node, _PRIMITIVES):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (kind, body), = node.items()
        if kind in ("tensor", "ndarray") and body in tensors:
            return tensors[body] if kind == "tensor" else tensors[body].numpy()
        if kind == "dict" and isinstance(body, list):
            return {key: _decode(item, tensors, origin) for key, item in body}
        if kind in ("list", "tuple") and isinstance(body, list):
            items = [_decode(item, tensors, origin) for item in body]
            return tuple(items) if kind == "tuple" else items
    raise TensorFileError(f"{origin}: unreadable state structure near {str(node)[:80]!r}; the file is damaged")


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory: copy the later ones."""
    seen: set[int] = set()
    result = {}
    for name, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        result[name] = tensor.clone() if storage in seen and tensor.numel() else tensor
        seen.add(storage)
    return result


def save_state(path: str | Path, state: Any) -> None:
    """Write `state` (nested dicts / lists / tuples of tensors, arrays and JSON values) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, "", tensors)
    metadata = {FORMAT_KEY: FORMAT, STRUCTURE_KEY: json.dumps(structure)}
    with atomic_output(path) as temporary:
        save_file(_unshared(tensors), str(temporary), metadata=metadata)


def load_state(path: str | Path, what: str = "state file") -> Any:
    """The state written by save_state; tensors on the CPU."""
    path = Path(path)
    metadata = safetensors_metadata(path, what)
    if metadata.get(FORMAT_KEY) != FORMAT or STRUCTURE_KEY not in metadata:
        raise TensorFileError(f"{path} is not a state file of this project (format {metadata.get(FORMAT_KEY)!r})")
    try:
        structure = json.loads(metadata[STRUCTURE_KEY])
    except ValueError as error:
        raise TensorFileError(f"{path}: its state structure is not JSON ({error}); the file is damaged") from error
    # Optimiser moments and generator states: their values are whatever training produced, not model weights.
    tensors = read_tensors(path, what=what, check_values=False)
    return _decode(structure, tensors, path)
