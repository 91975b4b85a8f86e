"""Reading weight files (safetensors, weights-only PyTorch files) with errors that name the file.

Every weight file this project reads goes through `read_tensors` (or `read_sharded` for a checkpoint split
over several safetensors files):
- a missing file is a MissingFileError; a truncated or corrupt one a TensorFileError saying it is incomplete;
- a PyTorch file is unpickled with ``weights_only=True``: one that holds anything but tensors in plain
  containers is refused, since loading it would run code;
- NaN or infinite values are an error naming the file and the tensor (they would give an all-black video).
  The check is one min/max reduction per tensor, where the tensor was loaded (~25 GB/s on two CPU cores,
  memory speed on a GPU), and a single device sync for the whole file.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open

from iasa.errors import InputError, MissingFileError

SAFETENSORS_SUFFIX = ".safetensors"
# Single-key wrappers that PyTorch training scripts put around a state dict (as diffsynth unwraps them).
STATE_DICT_WRAPPERS = ("state_dict", "module", "model_state")
NAMES_SHOWN = 5


class TensorFileError(InputError, ValueError):
    """A weight file that is incomplete, corrupt, unsafe to load or holds unusable values."""


class IncompleteFileError(TensorFileError):
    """A file cut short or damaged (an interrupted download or copy, a full disk)."""


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")


def _open_safetensors(path: Path, device: str | torch.device = "cpu"):
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError) as error:
        raise IncompleteFileError(f"{path} is incomplete or corrupt ({error}); download or write it again") from error


def safetensors_keys(path: str | Path, what: str = "weight file") -> list[str]:
    """The tensor names of a safetensors file, from its header (no tensor data is read)."""
    path = Path(path)
    _require_file(path, what)
    with _open_safetensors(path) as handle:
        return list(handle.keys())


def safetensors_metadata(path: str | Path, what: str = "weight file") -> dict[str, str]:
    path = Path(path)
    _require_file(path, what)
    with _open_safetensors(path) as handle:
        return dict(handle.metadata() or {})


def _read_safetensors(path: Path, device: str | torch.device, keys: Sequence[str] | None) -> dict[str, torch.Tensor]:
    with _open_safetensors(path, device) as handle:
        try:
            return {key: handle.get_tensor(key) for key in (handle.keys() if keys is None else keys)}
        except (SafetensorError, OSError) as error:
            raise IncompleteFileError(f"{path} is incomplete or corrupt ({error}); download or write it again") from error


def _read_pytorch(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            raise TensorFileError(
                f"{path} is not a weights-only PyTorch file: it holds Python objects besides tensors, and loading "
                "it would run code, so it is refused; use the official file, or convert a file you trust to safetensors"
            ) from error
        raise IncompleteFileError(f"{path} is incomplete or corrupt ({error}); download it again") from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:  # truncated zip, short read, bad magic number
        raise IncompleteFileError(f"{path} is incomplete or corrupt ({type(error).__name__}: {error}); download it again") from error
    if isinstance(state, dict) and len(state) == 1 and next(iter(state)) in STATE_DICT_WRAPPERS:
        state = next(iter(state.values()))
    if not isinstance(state, dict):
        raise TensorFileError(f"{path} holds a {type(state).__name__}, expected a state dict of tensors")
    other = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if other:
        raise TensorFileError(f"{path}: entries that are not tensors: {other[:NAMES_SHOWN]}; expected a flat state dict")
    return state


def non_finite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (min/max propagate both)."""
    names, extremes = [], []
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel() and tensor.element_size() > 1:  # fp8 has no min/max kernel
            names.append(name)
            extremes.append(torch.stack(torch.aminmax(tensor)).float())
    if not names:
        return []
    finite = torch.isfinite(torch.stack(extremes)).all(dim=1).tolist()  # the one device sync
    return [name for name, ok in zip(names, finite) if not ok]


def check_finite(tensors: Mapping[str, torch.Tensor], origin: str | Path) -> None:
    bad = non_finite_tensors(tensors)
    if bad:
        raise TensorFileError(
            f"{origin}: NaN or infinite values in {len(bad)} tensors ({', '.join(bad[:NAMES_SHOWN])}); the file is "
            "damaged or comes from a diverged training run: use another copy"
        )


def _converted(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return tensors
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in tensors.items()}


def read_tensors(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    what: str = "weight file",
    check_values: bool = True,
) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file or a weights-only PyTorch file (.pth, .bin, .ckpt, ...), on `device`,
    floating-point ones cast to `dtype` when given; values checked to be finite (after the cast) unless told not to."""
    path = Path(path)
    _require_file(path, what)
    if path.suffix == SAFETENSORS_SUFFIX:
        tensors = _read_safetensors(path, device, None)
    else:
        tensors = _read_pytorch(path, device)
    tensors = _converted(tensors, dtype)
    if check_values:
        check_finite(tensors, path)
    return tensors


def read_sharded(
    shards: Sequence[Path],
    weight_map: Mapping[str, str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    origin: str = "the index",
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint split over safetensors shards. weight_map (an index json's key -> file name)
    says which shard holds each key: every key is read from that file, and a key found in two shards, in a
    shard the index does not name for it, or missing from its shard is an error (never a silent choice)."""
    holders: dict[str, list[Path]] = {}
    for shard in shards:
        for key in safetensors_keys(shard, "checkpoint shard"):
            holders.setdefault(key, []).append(shard)
    twice = sorted(key for key, files in holders.items() if len(files) > 1)
    if twice:
        files = ", ".join(path.name for path in holders[twice[0]])
        raise TensorFileError(
            f"{len(twice)} tensors are stored in more than one shard (e.g. {twice[0]} in {files}, folder "
            f"{shards[0].parent}); the folder mixes files of different downloads: download it again"
        )
    if weight_map is not None:
        misplaced = sorted(key for key, files in holders.items() if weight_map.get(key) != files[0].name)
        absent = sorted(set(weight_map) - set(holders))
        if misplaced or absent:
            example = misplaced[0] if misplaced else absent[0]
            where = holders[example][0].name if example in holders else "no shard"
            raise TensorFileError(
                f"the shards in {shards[0].parent} do not match {origin}: {len(misplaced)} tensors are in another file "
                f"than it names, {len(absent)} it names are in no shard (e.g. {example}: index "
                f"{weight_map.get(example)}, found in {where}); download the folder again"
            )
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        keys = [key for key, files in holders.items() if files[0] == shard]
        part = _converted(_read_safetensors(shard, device, keys), dtype)
        check_finite(part, shard)
        tensors.update(part)
    return tensors


def read_weight_map(index: Path) -> dict[str, str]:
    """The key -> shard file map of a Hugging Face safetensors index json."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as error:
        raise TensorFileError(f"{index} is not a safetensors index (no weight_map): {error}") from error
    if not isinstance(weight_map, dict):
        raise TensorFileError(f"{index}: weight_map is not a key -> file mapping")
    return weight_map
