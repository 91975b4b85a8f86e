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

The same loop streams (`wan_decode_step`): the caches are an explicit `WanDecoderState` passed in and
returned, so latent frames can be decoded as they arrive and their frames handed on at once (latent frame 0
gives 1 frame, each further latent frame 4), with memory bounded by the caches (the last 2 frames of every
3D convolution's input). `decode_latent_frames` is that step with gradients (the decoder stage's truncated
backpropagation through time decodes a clip in pieces with it, cutting the carried caches from the graph with
`WanDecoderState.detached`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffsynth.models.wan_video_vae import WanVideoVAE, count_conv3d
from einops import rearrange

MEMORY_LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
VAE_MEMORY_FORMATS = tuple(MEMORY_LAYOUTS)
# VideoVAE_'s submodules, all of which hold 3D convolutions: decoding runs the last two, training all four.
VAE_PARTS = ("encoder", "conv1", "conv2", "decoder")


def set_conv_memory_format(vae: WanVideoVAE, memory_format: str, parts: tuple[str, ...] = ("decoder",)) -> None:
    """Store every 3D convolution's weight in the VAE's `parts` (of VAE_PARTS; the decoder's by default) in
    `memory_format` (values unchanged; a no-op when they already are; the weights are small, so switching costs
    little)."""
    for part in parts:
        for module in getattr(vae.model, part).modules():
            if isinstance(module, torch.nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=MEMORY_LAYOUTS[memory_format])


def decoder_steps(num_latent_frames: int, latent_frames_per_call: int) -> list[slice]:
    """Latent-frame slices of the decoder calls: [0:1], then runs of latent_frames_per_call."""
    starts = range(1, num_latent_frames, latent_frames_per_call)
    return [slice(0, 1)] + [slice(start, min(start + latent_frames_per_call, num_latent_frames)) for start in starts]


@dataclass(frozen=True)
class WanDecoderState:
    """The Wan VAE decoder's causal caches after the latent frames decoded so far: per CausalConv3d, in the
    order the decoder calls them, the last frames of its input (None before its first call; "Rep" for the
    temporal upsamplers after latent frame 0, diffsynth's marker). () before the first step."""

    caches: tuple = ()

    def detached(self) -> "WanDecoderState":
        """The same caches cut from the autograd graph: what a later step computes from them sends no gradient
        back into the steps before (truncated backpropagation through time)."""
        return WanDecoderState(tuple(c.detach() if isinstance(c, torch.Tensor) else c for c in self.caches))


def decode_latent_frames(
    vae: WanVideoVAE,
    latents: torch.Tensor,
    state: WanDecoderState,
    memory_format: str = "contiguous",
    latent_frames_per_call: int | None = None,
) -> tuple[torch.Tensor, WanDecoderState]:
    """wan_decode_step's decode with gradients and unclamped: latents (b, 16, t, h, w) -> frames (b, 3, f, 8 h,
    8 w) and the next state. The decoder runs latent_frames_per_call latent frames per call (None: all t in one,
    after latent frame 0 alone on a clip's first step; 1: diffsynth's decode loop, op for op)."""
    if latents.shape[2] == 0:
        raise ValueError("a decode step needs at least one latent frame")
    model = vae.model
    parameter = next(model.decoder.parameters())
    latents = latents.to(device=parameter.device, dtype=parameter.dtype)
    mean, inverse_std = (rearrange(s.to(latents), "c -> 1 c 1 1 1") for s in vae.scale)
    x = model.conv2(latents / inverse_std + mean)
    if memory_format == "channels_last_3d":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    # The decoder writes each convolution's new cache into the list (at the index it counts in feat_idx),
    # replacing entries and never changing a cached tensor, so the caller's state stays as it was.
    caches = list(state.caches) if state.caches else [None] * count_conv3d(model.decoder)
    frames_per_call = latent_frames_per_call or x.shape[2]
    if state.caches:
        steps = [slice(start, start + frames_per_call) for start in range(0, x.shape[2], frames_per_call)]
    else:  # its temporal upsamplers take the clip's first call as latent frame 0 alone
        steps = decoder_steps(x.shape[2], frames_per_call)
    pieces = []
    for step in steps:
        piece, caches, _ = model.decoder(x[:, :, step], feat_cache=caches, feat_idx=[0])
        pieces.append(piece)
    return torch.cat(pieces, dim=2), WanDecoderState(tuple(caches))


@torch.no_grad()
def wan_decode_step(
    vae: WanVideoVAE, latents: torch.Tensor, state: WanDecoderState, memory_format: str = "contiguous"
) -> tuple[torch.Tensor, WanDecoderState]:
    """Stream a clip: latents (b, 16, t, h, w), normalised as the DiT sees them, the next t >= 1 latent
    frames, and the state of the frames before (WanDecoderState() to start) -> the frames they complete,
    (b, 3, f, 8 h, 8 w) in [-1, 1] in the VAE's dtype (f = 4 (t - 1) + 1 on the first step, 4 t after), and
    the next state. Any split of a clip into steps gives the same video; `memory_format` must be the one the
    decoder's weights are in (set_conv_memory_format)."""
    frames, state = decode_latent_frames(vae, latents, state, memory_format)
    return frames.clamp_(-1, 1), state


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
    set_conv_memory_format(vae, memory_format)
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = latents.is_cuda or previous_benchmark
    try:
        videos = []
        for sample in latents.split(1):
            state, pieces = WanDecoderState(), []
            for step in decoder_steps(sample.shape[2], latent_frames_per_call):
                piece, state = wan_decode_step(vae, sample[:, :, step], state, memory_format)
                pieces.append(piece)
            del state  # the causal caches (GPU memory) go now, not at the next decode
            videos.append(torch.cat(pieces, dim=2))
            del pieces
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
    return torch.cat(videos).contiguous()


def decode_with_gradients(vae: WanVideoVAE, latents: torch.Tensor) -> torch.Tensor:
    """latents (b, 16, T, h, w) -> frames (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1], differentiable (the
    distillation's region loss): diffsynth's decoder in one call, in the VAE's dtype. (`decode_video` and
    diffsynth's decode run without gradients and clamp in place.)"""
    dtype = next(vae.model.parameters()).dtype
    return vae.model.decode(latents.to(dtype), vae.scale).clamp(-1, 1)
