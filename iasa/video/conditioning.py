"""Per-clip conditions of Wan2.1-I2V, computed once per clip: prompt embeddings, CLIP image tokens and
the I2V condition y (first-frame mask + VAE latent of the reference image followed by empty frames)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffsynth.models.wan_video_image_encoder import WanImageEncoder
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.models.wan_video_vae import WanVideoVAE
from einops import rearrange, repeat

from iasa.video.config import CLIP_FEATURE_DIM
from iasa.video.latent_grid import TEMPORAL_STRIDE, VAE_STRIDE, num_latent_frames


@torch.no_grad()
def encode_prompt(tokenizer: Callable, text_encoder: WanTextEncoder, prompt: str, device: torch.device) -> torch.Tensor:
    """prompt -> (1, text_length, text_dim); embeddings past the prompt's tokens are zero (as Wan does)."""
    ids, mask = tokenizer(prompt, return_mask=True, add_special_tokens=True)
    ids, mask = ids.to(device), mask.to(device)
    embeddings = text_encoder(ids, mask)
    return embeddings * mask[..., None].to(embeddings.dtype)


def image_to_tensor(image: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=torch.float32)
    return rearrange(tensor / 127.5 - 1.0, "h w c -> c h w").to(dtype)


@torch.no_grad()
def encode_clip_feature(image_encoder: WanImageEncoder | None, image: torch.Tensor) -> torch.Tensor:
    """image (3, H, W) in [-1, 1] -> CLIP tokens (1, 257, 1280) (penultimate ViT block, as Wan uses); no
    encoder (an architecture without image input) -> zero tokens (1, 0, 1280)."""
    if image_encoder is None:
        return image.new_zeros(1, 0, CLIP_FEATURE_DIM)
    return image_encoder.encode_image([image[None]])


def first_frame_mask(num_frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(4, T, H/8, W/8): 1 on the video frames given (only frame 0), grouped 4 video frames per latent
    frame; frame 0 is repeated 4 times to fill latent frame 0's group."""
    mask = torch.zeros(num_frames, height // VAE_STRIDE, width // VAE_STRIDE, device=device)
    mask[0] = 1
    mask = torch.cat([repeat(mask[:1], "1 h w -> r h w", r=TEMPORAL_STRIDE), mask[1:]])
    return rearrange(mask, "(t four) h w -> four t h w", four=TEMPORAL_STRIDE)


@torch.no_grad()
def encode_first_frame_condition(vae: WanVideoVAE, image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """y (1, 20, T, H/8, W/8) for a clip of num_frames = 4n + 1 frames starting with `image` (3, H, W)."""
    num_latent_frames(num_frames)  # validates 4n + 1
    _, height, width = image.shape
    video = torch.cat([image[:, None], image.new_zeros(3, num_frames - 1, height, width)], dim=1)
    latent = vae.encode([video], device=image.device)[0].to(image.dtype)
    mask = first_frame_mask(num_frames, height, width, image.device).to(image.dtype)
    return torch.cat([mask, latent])[None]
