"""Rectified-flow training quantities, as Wan is trained in diffsynth.

Noisy latents x_s = (1 - s) x0 + s noise for a noise level s in [0, 1]; the DiT predicts the flow
v = noise - x0, so x0 = x_s - s v. Noise levels come from Wan's shifted schedule over 1000 training
timesteps (timestep = 1000 s), and each level carries diffsynth's training weight (a bell curve over the
timestep, normalised to mean 1), which the fine-tune multiplies into the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffsynth.diffusion.flow_match import FlowMatchScheduler

from iasa.train.config import FlowConfig


@dataclass
class TrainingSchedule:
    """sigmas (S,) noise levels from ~1 down to 0; timesteps (S,) = 1000 sigmas; weights (S,) loss weights."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def from_config(cls, config: FlowConfig) -> "TrainingSchedule":
        scheduler = FlowMatchScheduler("Wan")
        scheduler.set_timesteps(config.num_train_timesteps, training=True, shift=config.shift)
        return cls(
            sigmas=scheduler.sigmas.float(),
            timesteps=scheduler.timesteps.float(),
            weights=scheduler.linear_timesteps_weights.float(),
        )

    def sample_index(self, min_fraction: float, max_fraction: float) -> int:
        """A uniform random schedule index from the [min_fraction, max_fraction) part of the schedule
        (0 = the noisiest end). Uses the global torch RNG so a resumed run draws the same indices."""
        return int(self.sample_indices(1, min_fraction, max_fraction).item())

    def sample_indices(self, count: int, min_fraction: float, max_fraction: float) -> torch.Tensor:
        """(count,) independent sample_index draws (one torch.randint call: count 1 draws what sample_index does)."""
        low = int(min_fraction * len(self.sigmas))
        high = max(int(max_fraction * len(self.sigmas)), low + 1)
        return torch.randint(low, high, (count,))


def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s) x0 + s noise; clean and noise (B, C, T, h, w)."""
    return (1 - sigma) * clean + sigma * noise


def flow_target(clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the DiT learns to predict: noise - x0."""
    return noise - clean


def flow_to_clean(noisy: torch.Tensor, flow: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x0 = x_s - s v, computed in float32 so a bf16 prediction does not lose the small residual."""
    return (noisy.float() - sigma * flow.float()).to(noisy.dtype)
