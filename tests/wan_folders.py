"""Tiny Wan2.1-I2V folders in the official file layout (sharded DiT with index, .pth T5/VAE/CLIP, tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from iasa.video import model_files
from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES, VideoModelConfig
from iasa.video.model_files import dit_shard_name

TINY = ARCHITECTURES["tiny"]
SHARDS = 7
TOKENIZER_WORDS = ["<pad>", "</s>", "<unk>", "a", "person", "is", "talking"]


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TOKENIZER_WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def write_tiny_wan_folder(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Random tiny networks saved as Wan-AI/Wan2.1-I2V-14B-720P saves them; returns the official-key
    state dicts that were written (float32 as written, T5 in bf16 as the official file)."""
    torch.manual_seed(0)
    nets = {part: build_random(part, TINY, torch.device("cpu"), torch.float32) for part in ("dit", "text_encoder", "vae", "image_encoder")}
    folder.mkdir(parents=True, exist_ok=True)
    dit = {key: value.contiguous() for key, value in nets["dit"].state_dict().items()}
    weight_map = {key: dit_shard_name(1 + index % SHARDS, SHARDS) for index, key in enumerate(sorted(dit))}
    for shard in sorted(set(weight_map.values())):
        save_file({key: dit[key] for key, name in weight_map.items() if name == shard}, str(folder / shard))
    index = {"metadata": {"total_size": sum(v.numel() * 4 for v in dit.values())}, "weight_map": weight_map}
    (folder / model_files.DIT_INDEX).write_text(json.dumps(index))
    text = {key: value.to(torch.bfloat16) for key, value in nets["text_encoder"].state_dict().items()}
    torch.save(text, folder / model_files.TEXT_ENCODER)
    vae = dict(nets["vae"].model.state_dict())  # official keys have no "model." prefix
    torch.save(vae, folder / model_files.VAE)
    clip = dict(nets["image_encoder"].model.state_dict())  # "visual.*" and "log_scale"
    clip["textual.token_embedding.weight"] = torch.zeros(4, 8)  # the text tower, which the loader skips
    torch.save(clip, folder / model_files.IMAGE_ENCODER)
    write_tokenizer(folder / model_files.TOKENIZER)
    return {"dit": dit, "text_encoder": text, "vae": vae, "image_encoder": clip}


def tiny_config(folder: Path) -> VideoModelConfig:
    return VideoModelConfig(model_size="tiny", model_dir=str(folder), unianimate_checkpoint=None, dtype="float32", device="cpu")
