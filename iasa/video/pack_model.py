"""Pack a trained model into one self-contained folder: the model folder with a LoRA merged into the DiT, the
pose guider beside it, every tensor in half precision (the embedded miniature student, models/miniature/).

The output is a model folder of the same layout as the source (the same file names, so the same loader reads
it: model.model_dir=<out>, model.lora_path=null, model.pose_guider_path=<out>/pose_guider.safetensors):
- DiT shards (safetensors): each weight a LoRA adapts becomes W + (alpha / rank) B A (peft's merge, the
  update the adapter adds at inference), then every floating-point tensor is cast to `dtype`;
- other safetensors files: cast to `dtype`;
- any other file (tokenizer files, a shard index) is copied byte for byte.
The LoRA file is this project's (iasa.video.lora.save_lora: rank and alpha in its metadata).
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from iasa.errors import MissingFileError
from iasa.tensor_files import read_tensors, safetensors_metadata
from iasa.video.assembly import CheckpointKeyError
from iasa.video.model_files import DIT_SHARD

POSE_GUIDER_FILE = "pose_guider.safetensors"
LORA_PARTS = (".lora_A.weight", ".lora_B.weight")


def lora_updates(path: str | Path) -> dict[str, torch.Tensor]:
    """'<module>.weight' -> (alpha / rank) B A in float32, for every module the LoRA file adapts."""
    path = Path(path)
    metadata = safetensors_metadata(path, "LoRA file")
    scale = float(metadata["alpha"]) / int(metadata["rank"])
    pairs: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, tensor in read_tensors(path, what="LoRA file").items():
        part = next((part for part in LORA_PARTS if key.endswith(part)), None)
        if part is None:
            raise CheckpointKeyError(f"{path}: {key} is not a lora_A / lora_B weight; pass a file written by save_lora")
        pairs[key[: -len(part)]][part] = tensor.float()
    incomplete = sorted(module for module, pair in pairs.items() if len(pair) != 2)
    if incomplete:
        raise CheckpointKeyError(f"{path}: {incomplete[:5]} lack lora_A or lora_B; the file is damaged")
    return {f"{module}.weight": scale * (pair[".lora_B.weight"] @ pair[".lora_A.weight"]) for module, pair in pairs.items()}


def _half(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {key: (value.to(dtype) if value.is_floating_point() else value).contiguous() for key, value in tensors.items()}


def pack_model_folder(
    model_dir: str | Path,
    lora_path: str | Path | None,
    pose_guider_path: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float16,
) -> list[Path]:
    """Write the packed folder `out` (which must not exist yet; the caller renames it into place) and return
    its files. Every LoRA update must land on a weight of the DiT (its shards: DIT_SHARD's file names).
    Whether the result loads is the caller's check (iasa.video.assembly.load_wan_components)."""
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise MissingFileError(f"model folder {model_dir} does not exist")
    updates = lora_updates(lora_path) if lora_path is not None else {}
    merged: set[str] = set()
    out.mkdir(parents=True)
    written = []
    for source in sorted(model_dir.rglob("*")):
        if source.is_dir():
            continue
        target = out / source.relative_to(model_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix != ".safetensors":
            shutil.copyfile(source, target)
        else:
            tensors = read_tensors(source)
            if DIT_SHARD.fullmatch(source.name) and source.parent == model_dir:
                for key in updates.keys() & tensors.keys():
                    tensors[key] = tensors[key].float() + updates[key]
                    merged.add(key)
            save_file(_half(tensors, dtype), str(target), metadata=safetensors_metadata(source) or None)
        written.append(target)
    unmatched = sorted(updates.keys() - merged)
    if unmatched:
        raise CheckpointKeyError(
            f"{lora_path} adapts {len(unmatched)} weights the DiT of {model_dir} does not have ({unmatched[:3]}); "
            "was it trained on this model?"
        )
    save_file(_half(read_tensors(pose_guider_path, what="pose guider file"), dtype), str(out / POSE_GUIDER_FILE))
    written.append(out / POSE_GUIDER_FILE)
    return written


def folder_bytes(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths)


def describe_sizes(paths: list[Path], root: Path) -> str:
    return json.dumps({str(path.relative_to(root)): path.stat().st_size for path in sorted(paths)})
