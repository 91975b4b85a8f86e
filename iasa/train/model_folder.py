"""Write the networks of a model trained here (the miniature's pretraining stages) as a model folder in the
Wan2.1 layout that iasa.video.model_files locates and iasa.video.assembly loads: safetensors with the official
key names (the DiT's and the text encoder's are diffsynth's module names, the VAE's lack diffsynth's "model."
prefix), one DiT shard named as a one-shard checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.models.wan_video_vae import WanVideoVAE

from iasa.train.adapters import save_safetensors_atomic
from iasa.video.model_files import TEXT_ENCODER, VAE, dit_shard_name, safetensors_name


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", dtype) for name, tensor in module.state_dict().items()}


def save_dit(dit: WanModel, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """The DiT as diffusion_pytorch_model-00001-of-00001.safetensors in `folder`; returns the file."""
    path = Path(folder) / dit_shard_name(1, 1)
    save_safetensors_atomic(_cast(dit, dtype), path)
    return path


def save_vae(vae: WanVideoVAE, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """The VAE network (vae.model, official names) as Wan2.1_VAE.safetensors in `folder`."""
    path = Path(folder) / safetensors_name(VAE)
    save_safetensors_atomic(_cast(vae.model, dtype), path)
    return path


def save_text_encoder(text_encoder: WanTextEncoder, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """The text encoder as models_t5_umt5-xxl-enc-bf16.safetensors in `folder`."""
    path = Path(folder) / safetensors_name(TEXT_ENCODER)
    save_safetensors_atomic(_cast(text_encoder, dtype), path)
    return path
