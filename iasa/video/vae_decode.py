"""Wan VAE decode, faster: diffsynth's causal frame-by-frame loop with cuDNN autotuning and one concatenation.

diffsynth's `WanVideoVAE.decode` round-trips the latents through the CPU, runs the decoder one latent frame at
a time (each call reads and refreshes the causal caches of every 3D convolution), grows the output with a
`torch.cat` per frame and keeps the caches alive afterwards. `decode_video` runs the same decoder calls in the
same order on the latents where they are, with `torch.backends.cudnn.benchmark` on for the loop (the
convolution shapes repeat every frame, so autotuning pays from the second frame; the flag is restored after),
collects the frames in a list, concatenates once and frees the caches. Optionally the 3D convolutions run in
channels_last_3d (NDHWC), which cuDNN's bf16 kernels often prefer; the results are the same up to the
rounding of a different kernel.
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


@torch.no_grad()
def decode_video(vae: WanVideoVAE, latents: torch.Tensor, memory_format: str = "contiguous") -> torch.Tensor:
    """latents (b, 16, T, h, w), normalised as the DiT sees them -> video (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in
    [-1, 1], in the VAE's dtype on the VAE's device (the latents are moved there)."""
    if memory_format not in VAE_MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {VAE_MEMORY_FORMATS}, got {memory_format!r}")
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
            frames = []
            for index in range(x.shape[2]):
                # The decoder walks its convolutions in a fixed order, counting them in feat_idx.
                model._conv_idx = [0]
                frame, model._feat_map, model._conv_idx = model.decoder(
                    x[:, :, index : index + 1], feat_cache=model._feat_map, feat_idx=model._conv_idx
                )
                frames.append(frame)
            videos.append(torch.cat(frames, dim=2).clamp_(-1, 1))
            del frames
    finally:
        model.clear_cache()  # drop the causal caches (GPU memory) now, not at the next decode
        torch.backends.cudnn.benchmark = previous_benchmark
    return torch.cat(videos).contiguous()
