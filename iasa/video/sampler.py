"""Flow-matching sampling of a pose-driven clip of any length, in overlapping windows fused every step.

Teacher settings: UniAnimate-DiT's 50 steps, cfg 1.5 (two DiT passes per step; the negative pass has the
negative prompt and no pose features). Student settings: 1-4 steps, cfg 1 (one pass). Prompt, CLIP and
first-frame conditions are computed once per clip by the caller; the pose features and sparse layout once
per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from diffsynth.diffusion.flow_match import FlowMatchScheduler
from tqdm.auto import tqdm

from iasa.attention.layout import SparseLayout
from iasa.video.config import LATENT_CHANNELS, SamplerConfig
from iasa.video.denoiser import FlowConditions
from iasa.video.windows import Window, blend_windows, window_weights

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


@torch.no_grad()
def sample_latents(
    denoise: Denoiser,
    windows: list[WindowInputs],
    negative_context: torch.Tensor | None,
    latent_shape: tuple[int, int, int],
    sampler: SamplerConfig,
    overlap: int,
    progress: bool = True,
) -> torch.Tensor:
    """Denoise latents (1, 16, T, h, w) of latent_shape (T, h, w) over all windows.

    At every step each window predicts the flow of its slice (with cfg when cfg_scale != 1: nega + cfg (posi -
    nega), the negative pass FlowConditions.unconditional with negative_context (1, L, text_dim) as the prompt
    and no pose features), the predictions are blended over overlaps, and one Euler step moves the whole clip.
    """
    if sampler.cfg_scale != 1.0 and negative_context is None:
        raise ValueError("cfg_scale != 1 needs the negative prompt's embeddings")
    context = windows[0].conditions.context
    dtype, device = context.dtype, context.device
    frames, height, width = latent_shape
    latents = initial_noise((1, LATENT_CHANNELS, frames, height, width), sampler.seed, device, dtype)
    timesteps, sigmas = flow_matching_schedule(sampler.num_steps, sampler.shift)
    weights = window_weights([inputs.window for inputs in windows], overlap)
    bar = tqdm(total=len(timesteps) * len(windows), desc="denoising", unit="window", disable=not progress)
    for index, timestep in enumerate(timesteps):
        t = timestep.reshape(1).to(device=device, dtype=dtype)
        predictions = []
        for inputs in windows:
            noisy = latents[:, :, inputs.window.start : inputs.window.stop]
            flow = denoise(noisy, t, inputs.conditions, inputs.layout)
            if sampler.cfg_scale != 1.0:
                unconditional = denoise(noisy, t, inputs.conditions.unconditional(negative_context), inputs.layout)
                flow = unconditional + sampler.cfg_scale * (flow - unconditional)
            predictions.append(flow)
            bar.update(1)
        flow = blend_windows(predictions, [inputs.window for inputs in windows], weights, frames)
        next_sigma = sigmas[index + 1] if index + 1 < len(sigmas) else torch.tensor(0.0)
        latents = latents + flow * (next_sigma - sigmas[index]).to(device=device, dtype=dtype)
    bar.close()
    return latents
