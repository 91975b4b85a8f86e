"""Wan VAE decode, faster: diffsynth's causal decoder loop in bigger steps, autotuned, concatenated once.

diffsynth's `WanVideoVAE.decode` round-trips the latents through the CPU, runs the decoder one latent frame at
a time (each call reads and refreshes the causal caches of every 3D convolution), grows the output with a
`torch.cat` per frame and keeps the caches alive afterwards. `decode_video` runs the same decoder on the
latents where they are, with `torch.backends.cudnn.benchmark` on (the convolution shapes repeat every call,
so autotuning pays from the second; the flag is restored after), collects the pieces in a list, concatenates
once and frees the caches.

Steps: the first latent frame alone (the decoder's temporal upsampling treats its first call specially),
then `latent_frames_per_call` latent frames per call. The decoder is causal and its caches carry the last
frames of each call into the next, so any step size computes the same video as one frame per call (1 is
diffsynth's loop); bigger steps give the convolutions longer time axes (fewer, larger kernels) at the cost of
activation memory growing with the step. Optionally the 3D convolutions run in channels_last_3d (NDHWC),
which cuDNN's bf16 kernels often prefer. Results equal diffsynth's up to the rounding of other kernels.
"""

from __future__ import annotations

import torch
from diffsynth.models.wan_video_vae import WanVideoVAE
from einops import rearrange

VAE_MEMORY_FORMATS = ("contiguous", "channels_last_3d")


def set_conv_memory_format(vae: WanVideoVAE, memory_format: str) -> None:
    """Store every decoder 3D convolution's weight in `memory_format` (values unchanged; a no-op when they
    already are; the decoder's weights are small, so switching costs little)."""
    layout = torch.channels_last_3d if memory_format == "channels_last_3d" else torch.contiguous_format
    for module in vae.model.decoder.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=layout)


def decoder_steps(num_latent_frames: int, latent_frames_per_call: int) -> list[slice]:
    """Latent-frame slices of the decoder calls: [0:1], then runs of latent_frames_per_call."""
    starts = range(1, num_latent_frames, latent_frames_per_call)
    return [slice(0, 1)] + [slice(start, min(start + latent_frames_per_call, num_latent_frames)) for start in starts]


@torch.no_grad()
def decode_video(
    vae: WanVideoVAE, latents: torch.Tensor, memory_format: str = "contiguous", latent_frames_per_call: int = 1
) -> torch.Tensor:
    """latents (b, 16, T, h, w), normalised as the DiT sees them -> video (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in
    [-1, 1], in the VAE's dtype on the VAE's device (the latents are moved there)."""
    if memory_format not in VAE_MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {VAE_MEMORY_FORMATS}, got {memory_format!r}")
    if latent_frames_per_call < 1:
        raise ValueError(f"latent_frames_per_call must be >= 1, got {latent_frames_per_call}")
    model = vae.model
    parameter = next(model.decoder.parameters())
    latents = latents.to(device=parameter.device, dtype=parameter.dtype)
    set_conv_memory_format(vae, memory_format)
    mean, inverse_std = (rearrange(s.to(latents), "c -> 1 c 1 1 1") for s in vae.scale)
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = latents.is_cuda or previous_benchmark
    try:
        videos = []
        for sample in latents.split(1):
            x = model.conv2(sample / inverse_std + mean)
            if memory_format == "channels_last_3d":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            model.clear_cache()
            pieces = []
            for step in decoder_steps(x.shape[2], latent_frames_per_call):
                # The decoder walks its convolutions in a fixed order, counting them in feat_idx.
                model._conv_idx = [0]
                piece, model._feat_map, model._conv_idx = model.decoder(
                    x[:, :, step], feat_cache=model._feat_map, feat_idx=model._conv_idx
                )
                pieces.append(piece)
            videos.append(torch.cat(pieces, dim=2).clamp_(-1, 1))
            del pieces
    finally:
        model.clear_cache()  # drop the causal caches (GPU memory) now, not at the next decode
        torch.backends.cudnn.benchmark = previous_benchmark
    return torch.cat(videos).contiguous()


def decode_with_gradients(vae: WanVideoVAE, latents: torch.Tensor) -> torch.Tensor:
    """latents (b, 16, T, h, w) -> frames (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1], differentiable (the
    distillation's region loss): diffsynth's decoder in one call, in the VAE's dtype. (`decode_video` and
    diffsynth's decode run without gradients and clamp in place.)"""
    dtype = next(vae.model.parameters()).dtype
    return vae.model.decode(latents.to(dtype), vae.scale).clamp(-1, 1)
