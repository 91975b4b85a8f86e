"""Where the Wan2.1-I2V-14B-720P files live in a model folder, and a clear error when some are missing.

Layout (as published on Hugging Face, Wan-AI/Wan2.1-I2V-14B-720P):
    diffusion_pytorch_model-0000{1..7}-of-00007.safetensors + diffusion_pytorch_model.safetensors.index.json
    models_t5_umt5-xxl-enc-bf16.pth
    Wan2.1_VAE.pth
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
    google/umt5-xxl/            (tokenizer files)
Each .pth file may instead be a .safetensors file of the same name and keys (what this project writes, e.g. the
miniature's model folder); the safetensors one is read when both exist. An architecture without image input
needs no CLIP file, one with the byte tokenizer no tokenizer folder (iasa.video.config.WanArchitecture).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from iasa.errors import InputError
from iasa.tensor_files import read_weight_map
from iasa.video.config import WanArchitecture

DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SHARD = re.compile(r"diffusion_pytorch_model-(\d{5})-of-(\d{5})\.safetensors")
TEXT_ENCODER = "models_t5_umt5-xxl-enc-bf16.pth"
VAE = "Wan2.1_VAE.pth"
IMAGE_ENCODER = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
TOKENIZER = "google/umt5-xxl"
DOWNLOAD_HINT = (
    "download Wan-AI/Wan2.1-I2V-14B-720P (e.g. `huggingface-cli download Wan-AI/Wan2.1-I2V-14B-720P "
    "--local-dir {folder}`) or set model.model_dir to the folder that holds it"
)
# An architecture with the byte tokenizer (the miniature's) has no published weights: its folders are trained here.
TRAINED_HERE_HINT = (
    "no weights of this architecture are published: set model.model_dir to a folder the miniature's stages write, "
    "e.g. outputs/miniature/teacher/model (scripts/run_miniature.sh), or the shipped models/miniature"
)


def fetch_hint(folder: Path, arch: WanArchitecture) -> str:
    """What to do about a missing model folder or file: download the 14B, or train the miniature's."""
    return DOWNLOAD_HINT.format(folder=folder) if arch.text_tokenizer == "umt5" else TRAINED_HERE_HINT


class ModelFilesError(InputError, FileNotFoundError):
    """Model files that are missing or inconsistent; the message lists them and where they were looked for."""


@dataclass(frozen=True)
class WanModelFiles:
    dit_shards: tuple[Path, ...]
    # The shards' index json (key -> shard file), when the folder has one.
    dit_index: Path | None
    text_encoder: Path
    vae: Path
    # None when the architecture has no image input / uses the byte tokenizer.
    image_encoder: Path | None
    tokenizer: Path | None


def dit_shard_name(index: int, total: int) -> str:
    return f"diffusion_pytorch_model-{index:05d}-of-{total:05d}.safetensors"


def _expected_dit_shards(folder: Path) -> list[str]:
    """Shard names from the index json (its weight_map), else from the shard names' "-of-N" count."""
    index = folder / DIT_INDEX
    if index.is_file():
        return sorted(set(read_weight_map(index).values()))
    found = [match for path in folder.glob("diffusion_pytorch_model-*.safetensors") if (match := DIT_SHARD.fullmatch(path.name))]
    if not found:
        return [DIT_INDEX]
    total = int(found[0].group(2))
    return [dit_shard_name(i, total) for i in range(1, total + 1)]


def safetensors_name(name: str) -> str:
    """The safetensors file that may stand in for an official .pth file: same stem."""
    return str(Path(name).with_suffix(".safetensors"))


def _weight_file(folder: Path, name: str) -> Path | None:
    """The safetensors stand-in of `name` if present, else `name` itself if present, else None."""
    for candidate in (safetensors_name(name), name):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def locate_model_files(folder: str | Path, arch: WanArchitecture | None = None) -> WanModelFiles:
    """Every file of the model folder that `arch` (default: the 14B's) needs, or ModelFilesError listing all
    missing ones."""
    folder = Path(folder)
    arch = WanArchitecture() if arch is None else arch
    if not folder.is_dir():
        raise ModelFilesError(f"model folder {folder.resolve()} (model.model_dir) does not exist; " + fetch_hint(folder, arch))
    shards = _expected_dit_shards(folder)
    missing = [name for name in shards if not (folder / name).is_file()]
    weights = {name: _weight_file(folder, name) for name in (TEXT_ENCODER, VAE, IMAGE_ENCODER)}
    needed = [TEXT_ENCODER, VAE] + ([IMAGE_ENCODER] if arch.image_input else [])
    missing += [name for name in needed if weights[name] is None]
    uses_tokenizer_folder = arch.text_tokenizer == "umt5"
    if uses_tokenizer_folder and not (folder / TOKENIZER).is_dir():
        missing.append(TOKENIZER + "/")
    if missing:
        raise ModelFilesError(
            f"missing in model folder {folder.resolve()}: {', '.join(missing)}; " + fetch_hint(folder, arch)
        )
    return WanModelFiles(
        dit_shards=tuple(folder / name for name in shards),
        dit_index=folder / DIT_INDEX if (folder / DIT_INDEX).is_file() else None,
        text_encoder=weights[TEXT_ENCODER],
        vae=weights[VAE],
        image_encoder=weights[IMAGE_ENCODER] if arch.image_input else None,
        tokenizer=folder / TOKENIZER if uses_tokenizer_folder else None,
    )
