"""Flow-matching sampling of a pose-driven clip of any length, in overlapping windows fused every step.

Teacher settings: UniAnimate-DiT's 50 steps, cfg 1.5 (two DiT passes per step; the negative pass has the
negative prompt and no pose features). Student settings: 1-4 steps, cfg 1 (one pass). Prompt, CLIP and
first-frame conditions are computed once per clip by the caller; the pose features and sparse layout once
per window. Every window after the first denoises its leading private frames on its own (iasa.video.windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffsynth.diffusion.flow_match import FlowMatchScheduler
from tqdm.auto import tqdm

from iasa.attention.layout import SparseLayout
from iasa.video.config import LATENT_CHANNELS, SamplerConfig
from iasa.video.denoiser import FlowConditions
from iasa.video.windows import Window, blend_windows, private_frame_counts, window_weights

# (noisy latents (1, 16, T, h, w), timestep (1,), conditions, layout or None) -> flow (1, 16, T, h, w):
# iasa.video.denoiser.predict_flow with the DiT and the sparse kernel bound.
Denoiser = Callable[[torch.Tensor, torch.Tensor, FlowConditions, SparseLayout | None], torch.Tensor]


@dataclass
class WindowInputs:
    """What the DiT needs for one window: its conditions (pose_features (1, dim, T, h/2, w/2), y (1, 20, T, h, w)
    with the reference-pose embedding added, the prompt's context and the CLIP tokens) and its sparse layout
    (None = dense)."""

    window: Window
    conditions: FlowConditions
    layout: SparseLayout | None


def flow_matching_schedule(num_steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas), each (num_steps,): Wan's shifted schedule from sigma 1 towards 0."""
    scheduler = FlowMatchScheduler("Wan")
    scheduler.set_timesteps(num_steps, shift=shift)
    return scheduler.timesteps, scheduler.sigmas


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Seeded on the CPU so a seed gives the same clip on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def private_noise_seed(seed: int, window_index: int) -> int:
    """The seed of window window_index's private leading frames: its own stream for each (seed, window), apart
    from the clip's noise (seeded with `seed` itself). UniAnimate draws this noise unseeded (torch.randn_like),
    which no seed reproduces."""
    return int(np.random.SeedSequence([seed % 2**64, window_index]).generate_state(1, np.uint64)[0])


def guided_flow(
    denoise: Denoiser, noisy: torch.Tensor, t: torch.Tensor, inputs: WindowInputs, negative_context: torch.Tensor | None,
    cfg_scale: float,
) -> torch.Tensor:  # fmt: skip
    """One window's flow; with cfg (cfg_scale != 1) nega + cfg (posi - nega), UniAnimate's combination, where the
    negative pass is FlowConditions.unconditional (negative prompt, no pose features)."""
    flow = denoise(noisy, t, inputs.conditions, inputs.layout)
    if cfg_scale == 1.0:
        return flow
    unconditional = denoise(noisy, t, inputs.conditions.unconditional(negative_context), inputs.layout)
    return unconditional + cfg_scale * (flow - unconditional)


@torch.no_grad()
def sample_latents(
    denoise: Denoiser,
    windows: list[WindowInputs],
    negative_context: torch.Tensor | None,
    latent_shape: tuple[int, int, int],
    sampler: SamplerConfig,
    overlap: int,
    private: int,
    progress: bool = True,
) -> torch.Tensor:
    """Denoise latents (1, 16, T, h, w) of latent_shape (T, h, w) over all windows.

    At every step each window predicts the flow of its slice (with cfg when cfg_scale != 1: guided_flow, the
    negative pass taking negative_context (1, L, text_dim) as the prompt and no pose features), the predictions
    are blended over overlaps, and one Euler step moves the whole clip. Each window after the first feeds its
    own state into its first `private` latent frames instead of the clip's (seeded noise at the start,
    private_noise_seed) and steps it with its own flow; the blend gives those frames weight 0
    (iasa.video.windows).
    """
    if sampler.cfg_scale != 1.0 and negative_context is None:
        raise ValueError("cfg_scale != 1 needs the negative prompt's embeddings")
    context = windows[0].conditions.context
    dtype, device = context.dtype, context.device
    frames, height, width = latent_shape
    latents = initial_noise((1, LATENT_CHANNELS, frames, height, width), sampler.seed, device, dtype)
    timesteps, sigmas = flow_matching_schedule(sampler.num_steps, sampler.shift)
    plan = [inputs.window for inputs in windows]
    weights = window_weights(plan, overlap, private)
    own_frames = private_frame_counts(plan, private)
    own_latents = [
        initial_noise((1, LATENT_CHANNELS, own, height, width), private_noise_seed(sampler.seed, index), device, dtype)
        for index, own in enumerate(own_frames)
    ]  # fmt: skip
    bar = tqdm(total=len(timesteps) * len(windows), desc="denoising", unit="window", disable=not progress)
    for index, timestep in enumerate(timesteps):
        t = timestep.reshape(1).to(device=device, dtype=dtype)
        next_sigma = sigmas[index + 1] if index + 1 < len(sigmas) else torch.tensor(0.0)
        step = (next_sigma - sigmas[index]).to(device=device, dtype=dtype)
        predictions = []
        for window_index, (inputs, own) in enumerate(zip(windows, own_frames)):
            from_clip = latents[:, :, inputs.window.start + own : inputs.window.stop]
            noisy = torch.cat([own_latents[window_index], from_clip], dim=2)
            flow = guided_flow(denoise, noisy, t, inputs, negative_context, sampler.cfg_scale)
            own_latents[window_index] = own_latents[window_index] + flow[:, :, :own] * step
            predictions.append(flow)
            bar.update(1)
        flow = blend_windows(predictions, plan, weights, frames)
        latents = latents + flow * step
    bar.close()
    return latents
