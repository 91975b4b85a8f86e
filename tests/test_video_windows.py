"""Long-video windows: coverage, blending, private leading frames, and sampling that matches one window when
the clip fits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iasa.video.config import SamplerConfig
from iasa.video.denoiser import FlowConditions
from iasa.video.sampler import WindowInputs, initial_noise, private_noise_seed, sample_latents
from iasa.video.windows import Window, blend_windows, plan_windows, window_weights

WINDOW, OVERLAP, PRIVATE = 21, 4, 2


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
    weights = window_weights(windows, OVERLAP, PRIVATE)
    truth = torch.randn(1, 2, num_latent_frames, 1, 1)
    predictions = [truth[:, :, w.start : w.stop] for w in windows]
    torch.testing.assert_close(blend_windows(predictions, windows, weights, num_latent_frames), truth)


def test_private_leading_frames_weigh_nothing_and_the_rest_of_the_overlap_ramps():
    windows = plan_windows(38, WINDOW, OVERLAP)  # starts 0 and 17: exactly the overlap is shared
    assert [(w.start, w.stop) for w in windows] == [(0, 21), (17, 38)]
    first, second = window_weights(windows, OVERLAP, PRIVATE)
    torch.testing.assert_close(first[-OVERLAP:], torch.tensor([1, 1, 2 / 3, 1 / 3]))
    torch.testing.assert_close(second[:OVERLAP], torch.tensor([0, 0, 1 / 3, 2 / 3]))
    assert (first[:-OVERLAP] == 1).all() and (second[OVERLAP:] == 1).all()
    blended = blend_windows([torch.zeros(1, 1, 21, 1, 1), torch.ones(1, 1, 21, 1, 1)], windows, [first, second], 38)
    # Frames 17 and 18 are the second window's private start: the first window's alone.
    torch.testing.assert_close(blended[0, 0, 15:23, 0, 0], torch.tensor([0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1]))


def test_weights_of_an_end_aligned_last_window_and_without_private_frames():
    windows = plan_windows(60, WINDOW, OVERLAP)
    assert [w.start for w in windows] == [0, 17, 34, 39]
    weights = window_weights(windows, OVERLAP, PRIVATE)
    for middle in weights[1:3]:
        torch.testing.assert_close(middle[:4], torch.tensor([0, 0, 1 / 3, 2 / 3]))
        torch.testing.assert_close(middle[-2:], torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(weights[3][:5], torch.tensor([0, 0, 1 / 3, 2 / 3, 1]))
    assert weights[0][0] == 1 and weights[3][-1] == 1  # the clip's own ends
    # private 0: every overlap frame is blended, ramps over all four.
    first, second = window_weights(plan_windows(38, WINDOW, OVERLAP), OVERLAP, 0)
    torch.testing.assert_close(first[-OVERLAP:], torch.tensor([0.8, 0.6, 0.4, 0.2]))
    torch.testing.assert_close(second[:OVERLAP], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    with pytest.raises(ValueError, match="private leading frames 5"):
        window_weights(windows, OVERLAP, 5)


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
        overlap=OVERLAP, private=PRIVATE, progress=False,
    )  # fmt: skip


@pytest.mark.parametrize("num_latent_frames", [30, 38, 60])
def test_windowed_sampling_equals_whole_clip(num_latent_frames):
    """With a frame-local stand-in the private frames (stepped on their own) never reach the clip."""
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
        SamplerConfig(num_steps=1, cfg_scale=1.0), overlap=OVERLAP, private=PRIVATE, progress=False,
    )  # fmt: skip
    assert denoiser.calls == [(21, 1000), (21, 1000)]


class RecordingDenoiser(FrameLocalDenoiser):
    """The frame-local stand-in, keeping every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def __call__(self, noisy, timestep, conditions, layout):
        self.inputs.append(noisy.clone())
        return super().__call__(noisy, timestep, conditions, layout)


def test_private_frames_start_from_their_window_seed_and_follow_their_own_flow():
    seed, steps, shift = 7, 2, 5.0
    windows = plan_windows(38, WINDOW, OVERLAP)
    context = torch.full((1, 2, 3), 0.2)

    def sample() -> list[torch.Tensor]:
        denoiser = RecordingDenoiser()
        sample_latents(
            denoiser, window_inputs(windows, context), None, (38, 2, 3),
            SamplerConfig(num_steps=steps, cfg_scale=1.0, shift=shift, seed=seed), overlap=OVERLAP, private=PRIVATE,
            progress=False,
        )  # fmt: skip
        return denoiser.inputs  # step 0: window 0, window 1; step 1: window 0, window 1

    inputs = sample()
    clip_noise = initial_noise((1, 16, 38, 2, 3), seed, torch.device("cpu"), torch.float32)
    own_noise = initial_noise((1, 16, PRIVATE, 2, 3), private_noise_seed(seed, 1), torch.device("cpu"), torch.float32)
    torch.testing.assert_close(inputs[0], clip_noise[:, :, 0:21])  # the first window starts the clip: no private frames
    torch.testing.assert_close(inputs[1][:, :, :PRIVATE], own_noise)
    torch.testing.assert_close(inputs[1][:, :, PRIVATE:], clip_noise[:, :, 17 + PRIVATE : 38])
    assert not torch.allclose(own_noise, clip_noise[:, :, 17 : 17 + PRIVATE], atol=0.5)
    # Step 1: the private frames moved by the window's own flow (the stand-in's sin(3x) t / 1000 + mean(context)).
    sigma = shift * torch.tensor([1.0, 0.5]) / (1 + (shift - 1) * torch.tensor([1.0, 0.5]))
    own_flow = torch.sin(3 * own_noise) * sigma[0] + context.mean()
    torch.testing.assert_close(inputs[3][:, :, :PRIVATE], own_noise + own_flow * (sigma[1] - sigma[0]))
    # Deterministic per (seed, window): the same run gives the same private noise, other windows and seeds others.
    torch.testing.assert_close(sample()[1], inputs[1], rtol=0, atol=0)
    assert private_noise_seed(seed, 1) == private_noise_seed(seed, 1)
    assert len({private_noise_seed(seed, 1), private_noise_seed(seed, 2), private_noise_seed(seed + 1, 1), seed}) == 4


def test_long_video_on_the_tiny_model_takes_each_seam_frame_from_its_owner():
    """One step of 7 latent frames in windows of 5 (overlap 3, private 2): windows [0, 5) and [2, 7). Frames 2, 3
    (the second window's private start) must be the first window's flow alone, frame 4 the mean of both, frames
    5, 6 the second window's, whose first two inputs are its own seeded noise. Each flow is computed here by
    calling the DiT directly, with cfg's negative pass lacking the pose features."""
    import functools

    from iasa.video.assembly import build_random
    from iasa.video.attention_patch import patch_self_attention
    from iasa.video.config import ARCHITECTURES, CLIP_FEATURE_DIM, CLIP_TOKENS, CONDITION_CHANNELS
    from iasa.video.denoiser import predict_flow

    tiny, cpu = ARCHITECTURES["tiny"], torch.device("cpu")
    torch.manual_seed(0)
    dit = build_random("dit", tiny, cpu, torch.float32)
    guider = build_random("pose_guider", tiny, cpu, torch.float32)
    patch_self_attention(dit)
    frames, height, width, cfg, seed = 7, 4, 6, 1.5, 3
    generator = torch.Generator().manual_seed(5)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    context, negative = randn(1, tiny.text_length, tiny.text_dim), randn(1, tiny.text_length, tiny.text_dim)
    clip_feature, y = randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM), randn(1, CONDITION_CHANNELS, 5, height, width)
    pose = torch.rand(1, 3, 4 * (frames - 1) + 1, 8 * height, 8 * width, generator=generator)
    windows = plan_windows(frames, 5, 3)
    assert [(w.start, w.stop) for w in windows] == [(0, 5), (2, 7)]
    with torch.no_grad():
        features = [guider.pose_features(pose[:, :, w.video_frames]) for w in windows]
        inputs = [WindowInputs(w, FlowConditions(context, clip_feature, y, f), None) for w, f in zip(windows, features)]
        got = sample_latents(
            functools.partial(predict_flow, dit, backend="reference"), inputs, negative, (frames, height, width),
            SamplerConfig(num_steps=1, cfg_scale=cfg, seed=seed), overlap=3, private=2, progress=False,
        )  # fmt: skip

        def guided(noisy: torch.Tensor, pose_features: torch.Tensor) -> torch.Tensor:
            t = torch.tensor([1000.0])  # one step: sigma 1 -> 0
            positive = predict_flow(dit, noisy, t, FlowConditions(context, clip_feature, y, pose_features))
            unconditional = predict_flow(dit, noisy, t, FlowConditions(negative, clip_feature, y, None))
            return unconditional + cfg * (positive - unconditional)

        noise = initial_noise((1, 16, frames, height, width), seed, cpu, torch.float32)
        own = initial_noise((1, 16, 2, height, width), private_noise_seed(seed, 1), cpu, torch.float32)
        first = guided(noise[:, :, 0:5], features[0])
        second = guided(torch.cat([own, noise[:, :, 4:7]], dim=2), features[1])
    expected = torch.cat([first[:, :, :4], (first[:, :, 4:] + second[:, :, 2:3]) / 2, second[:, :, 3:]], dim=2)
    torch.testing.assert_close(got, noise - expected, rtol=1e-5, atol=1e-5)
    # The seam frames differ from what blending the second window's private frames in would give.
    assert (got[:, :, 2:4] - (noise[:, :, 2:4] - (first[:, :, 2:4] + second[:, :, 0:2]) / 2)).abs().max() > 1e-2
