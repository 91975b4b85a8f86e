"""Long-video windows: coverage, blending, and sampling that matches one window when the clip fits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iasa.video.config import SamplerConfig
from iasa.video.denoiser import FlowConditions
from iasa.video.sampler import WindowInputs, initial_noise, sample_latents
from iasa.video.windows import Window, blend_windows, plan_windows, window_weights

WINDOW, OVERLAP = 21, 4


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300))
def test_windows_cover_every_latent_frame(num_latent_frames):
    windows = plan_windows(num_latent_frames, WINDOW, OVERLAP)
    covered = torch.zeros(num_latent_frames, dtype=torch.int64)
    for window in windows:
        covered[window.start : window.stop] += 1
    assert (covered > 0).all()
    assert windows[0].start == 0 and windows[-1].stop == num_latent_frames
    assert all(w.length == min(WINDOW, num_latent_frames) for w in windows)
    for previous, current in zip(windows, windows[1:]):
        assert previous.stop - current.start >= OVERLAP  # neighbours share at least the overlap
    video_frames = 4 * (num_latent_frames - 1) + 1
    assert windows[-1].video_frames.stop == video_frames  # the last window reaches the last video frame
    assert all(w.video_frames.stop - w.video_frames.start == 4 * (w.length - 1) + 1 for w in windows)


@settings(max_examples=30, deadline=None)
@given(st.integers(22, 200))
def test_blending_equal_predictions_returns_them(num_latent_frames):
    windows = plan_windows(num_latent_frames, WINDOW, OVERLAP)
    weights = window_weights(windows, OVERLAP)
    truth = torch.randn(1, 2, num_latent_frames, 1, 1)
    predictions = [truth[:, :, w.start : w.stop] for w in windows]
    torch.testing.assert_close(blend_windows(predictions, windows, weights, num_latent_frames), truth)


def test_overlap_ramps_between_neighbours():
    windows = plan_windows(38, WINDOW, OVERLAP)  # starts 0 and 17: exactly the overlap is shared
    assert [(w.start, w.stop) for w in windows] == [(0, 21), (17, 38)]
    first, second = window_weights(windows, OVERLAP)
    torch.testing.assert_close(first[-OVERLAP:], torch.tensor([0.8, 0.6, 0.4, 0.2]))
    torch.testing.assert_close(second[:OVERLAP], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    blended = blend_windows([torch.zeros(1, 1, 21, 1, 1), torch.ones(1, 1, 21, 1, 1)], windows, [first, second], 38)
    torch.testing.assert_close(blended[0, 0, 17:21, 0, 0], torch.tensor([0.2, 0.4, 0.6, 0.8]))


class FrameLocalDenoiser:
    """A stand-in DiT whose flow at each latent element depends only on that element, the timestep and
    the prompt: windowed sampling must then reproduce whole-clip sampling exactly."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, noisy, timestep, conditions, layout):
        self.calls.append((noisy.shape[2], int(timestep.item())))
        return torch.sin(3 * noisy) * timestep / 1000 + conditions.context.mean()


def window_inputs(windows: list[Window], context: torch.Tensor) -> list[WindowInputs]:
    return [WindowInputs(window, FlowConditions(context, None, None, None), layout=None) for window in windows]


def run(num_latent_frames: int, windows: list[Window], sampler: SamplerConfig) -> torch.Tensor:
    context, negative = torch.full((1, 2, 3), 0.2), torch.full((1, 2, 3), -0.1)
    return sample_latents(
        FrameLocalDenoiser(), window_inputs(windows, context), negative, (num_latent_frames, 2, 3), sampler,
        overlap=OVERLAP, progress=False,
    )  # fmt: skip


@pytest.mark.parametrize("num_latent_frames", [30, 38, 60])
def test_windowed_sampling_equals_whole_clip(num_latent_frames):
    sampler = SamplerConfig(num_steps=4, cfg_scale=3.0, seed=7)
    windowed = run(num_latent_frames, plan_windows(num_latent_frames, WINDOW, OVERLAP), sampler)
    whole = run(num_latent_frames, [Window(0, num_latent_frames)], sampler)
    torch.testing.assert_close(windowed, whole, rtol=1e-5, atol=1e-6)


def test_single_window_sampling_is_wan_flow_matching_with_cfg():
    """A clip that fits one window: Euler steps on Wan's shifted sigmas, cfg on the prompt."""
    steps, shift, cfg = 3, 5.0, 2.5
    sampler = SamplerConfig(num_steps=steps, cfg_scale=cfg, shift=shift, seed=11)
    frames = 9
    got = run(frames, plan_windows(frames, WINDOW, OVERLAP), sampler)

    x = initial_noise((1, 16, frames, 2, 3), 11, torch.device("cpu"), torch.float32)
    plain = torch.linspace(1, 0, steps + 1)[:-1]
    sigmas = shift * plain / (1 + (shift - 1) * plain)
    for i, sigma in enumerate(sigmas):
        t = sigma * 1000
        conditional = torch.sin(3 * x) * t / 1000 + 0.2
        unconditional = torch.sin(3 * x) * t / 1000 - 0.1
        velocity = unconditional + cfg * (conditional - unconditional)
        next_sigma = sigmas[i + 1] if i + 1 < steps else 0.0
        x = x + velocity * (next_sigma - sigma)
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_student_settings_make_one_pass_per_window_and_step():
    denoiser = FrameLocalDenoiser()
    windows = plan_windows(38, WINDOW, OVERLAP)
    sample_latents(
        denoiser, window_inputs(windows, torch.zeros(1, 2, 3)), None, (38, 2, 3),
        SamplerConfig(num_steps=1, cfg_scale=1.0), overlap=OVERLAP, progress=False,
    )  # fmt: skip
    assert denoiser.calls == [(21, 1000), (21, 1000)]
