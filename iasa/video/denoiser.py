"""One flow prediction of the pose-conditioned Wan2.1-I2V DiT.

diffsynth's `WanModel.forward` is broken in 2.1.12 and its `model_fn_wan_video` has no input for
UniAnimate's pose features, so `predict_flow` runs the DiT's own submodules in Wan's order, adding the pose
guider's features to the patch embeddings (UniAnimate's `add_condition`).
"""

from __future__ import annotations

import torch
from diffsynth.core.gradient import gradient_checkpoint_forward
from diffsynth.models.wan_video_dit import WanModel, sinusoidal_embedding_1d
from einops import rearrange


def rope_frequencies(dit: WanModel, frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """3D RoPE of a (frames, height, width) token grid in (f h w) order: (f*h*w, 1, head_dim / 2) complex."""
    f_freqs, h_freqs, w_freqs = dit.freqs
    return torch.cat(
        [
            f_freqs[:frames].view(frames, 1, 1, -1).expand(frames, height, width, -1),
            h_freqs[:height].view(1, height, 1, -1).expand(frames, height, width, -1),
            w_freqs[:width].view(1, 1, width, -1).expand(frames, height, width, -1),
        ],
        dim=-1,
    ).reshape(frames * height * width, 1, -1).to(device)


def predict_flow(
    dit: WanModel,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    clip_feature: torch.Tensor,
    y: torch.Tensor,
    pose_features: torch.Tensor | None,
    use_gradient_checkpointing: bool = False,
    use_gradient_checkpointing_offload: bool = False,
) -> torch.Tensor:
    """Flow (noise - x0) for noisy latents.

    latents (b, 16, T, h, w); timestep (b,) in [0, 1000]; context (b, L, text_dim) umt5 embeddings;
    clip_feature (b, 257, 1280); y (b, 20, T, h, w) I2V condition (reference pose embedding already added);
    pose_features (b, dim, T, h/2, w/2) from the pose guider, or None. Returns (b, 16, T, h, w).
    """
    t = dit.time_embedding(sinusoidal_embedding_1d(dit.freq_dim, timestep).to(latents.dtype))
    t_mod = rearrange(dit.time_projection(t), "b (six d) -> b six d", six=6)
    context = torch.cat([dit.img_emb(clip_feature), dit.text_embedding(context)], dim=1)
    x = dit.patch_embedding(torch.cat([latents, y], dim=1))
    frames, height, width = x.shape[2:]
    if pose_features is not None:
        x = x + pose_features.to(x.dtype)
    x = rearrange(x, "b c f h w -> b (f h w) c").contiguous()
    freqs = rope_frequencies(dit, frames, height, width, x.device)
    for block in dit.blocks:
        x = gradient_checkpoint_forward(
            block, use_gradient_checkpointing, use_gradient_checkpointing_offload, x, context, t_mod, freqs
        )
    x = dit.head(x, t)
    return dit.unpatchify(x, (frames, height, width))
