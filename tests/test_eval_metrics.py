import math

import numpy as np
import pytest
from scipy import linalg

from iasa.eval.beat_consistency import (
    audio_onsets,
    beat_consistency,
    clip_beat_consistency,
    joint_speed,
    motion_beats,
    onset_hit_rate,
    weighted_mean,
)
from iasa.eval.diversity import l1_diversity
from iasa.eval.frechet import frechet_distance, frechet_distance_from_statistics, gaussian_statistics

SAMPLE_RATE = 16000
FPS = 30


def click_track(click_times: np.ndarray, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    waveform = np.zeros(round(seconds * SAMPLE_RATE), np.float32)
    for time in click_times:
        start = round(time * SAMPLE_RATE)
        waveform[start : start + 160] = rng.standard_normal(160) * 0.5
    return waveform


def swinging_joints(minimum_times_offset: float, seconds: float) -> np.ndarray:
    """(frames, 55, 3) positions moving along x with speed 2 - cos(2 pi (t - offset)): one speed
    minimum per second, at offset + k seconds, never slower than a third of the top speed."""
    t = np.arange(round(seconds * FPS)) / FPS
    x = 2 * t - np.sin(2 * np.pi * (t - minimum_times_offset)) / (2 * np.pi)
    positions = np.zeros((len(t), 55, 3))
    positions[:, :, 0] = x[:, None]
    return positions


# --- Frechet distance --------------------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    features = np.random.default_rng(0).standard_normal((500, 8))
    assert abs(frechet_distance(features, features)) < 1e-4


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form() -> None:
    mean_a, mean_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)  # 5 + 5
    distance = frechet_distance_from_statistics(mean_a, np.diag(var_a), mean_b, np.diag(var_b), eps=0.0)
    assert distance == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_for_any_covariances() -> None:
    rng = np.random.default_rng(1)
    for dims, eps in ((5, 0.0), (40, 1e-6)):
        left, right = rng.standard_normal((dims, dims)), rng.standard_normal((dims, dims // 2))
        cov_a, cov_b = left @ left.T + np.eye(dims), right @ right.T  # cov_b is rank-deficient
        mean_a, mean_b = rng.standard_normal(dims), rng.standard_normal(dims)
        ridge = np.eye(dims) * eps
        root = np.real(linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge)))  # emage_evaltools' formula
        expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
        distance = frechet_distance_from_statistics(mean_a, cov_a, mean_b, cov_b, eps=eps)
        assert distance == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_gaussian_statistics_are_sample_mean_and_unbiased_covariance() -> None:
    features = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    mean, cov = gaussian_statistics(features)
    np.testing.assert_allclose(mean, [1.0, 1.0])
    np.testing.assert_allclose(cov, np.eye(2) * 4 / 3)


# --- L1 diversity ------------------------------------------------------------------------------


def test_l1_diversity_of_known_clips() -> None:
    moving = np.array([[0.0, 0.0], [2.0, 4.0]])  # deviations 1 + 2 per frame -> 6 in total
    still = np.ones((3, 2))
    assert l1_diversity([moving]) == pytest.approx(3.0)
    assert l1_diversity([moving, still]) == pytest.approx(6.0 / 5)


# --- beat consistency --------------------------------------------------------------------------


def test_onset_hit_rate_known_value() -> None:
    rate = onset_hit_rate(np.array([1.0, 2.0]), np.array([1.0, 2.3, 7.0]), sigma=0.3)
    assert rate == pytest.approx((1 + math.exp(-0.09 / 0.18)) / 2)


def test_joint_speed_uses_central_differences() -> None:
    positions = np.zeros((4, 1, 3))
    positions[:, 0, 0] = [0.0, 1.0, 4.0, 9.0]
    np.testing.assert_allclose(joint_speed(positions, fps=1.0)[:, 0], [1.0, 2.0, 4.0, 5.0])


def test_motion_beats_are_speed_minima() -> None:
    speed = joint_speed(swinging_joints(0.5, 6.0), FPS) / 3.0
    beats = motion_beats(speed, 0, speed.shape[0])
    np.testing.assert_array_equal(beats[0], [15, 45, 75, 105, 135, 165])


def test_beat_consistency_counts_joints_without_beats_as_zero() -> None:
    beats = [np.array([], dtype=int)] * 55
    for joint in (3, 6, 9, 12):
        beats[joint] = np.array([30, 60])
    assert beat_consistency(np.array([1.0, 2.0]), beats, fps=FPS) == pytest.approx(4 / 13)


def test_clip_bc_is_high_when_motion_stops_on_onsets_and_low_when_off_beat() -> None:
    seconds = 12.0
    clicks = 0.5 + np.arange(12)
    waveform = click_track(clicks, seconds)
    detected = audio_onsets(waveform, SAMPLE_RATE)
    assert np.abs(detected[:, None] - clicks[None]).min(axis=1).max() < 0.06

    on_beat, frames = clip_beat_consistency(waveform, SAMPLE_RATE, swinging_joints(0.5, seconds), FPS, np.full(55, 3.0))
    off_beat, _ = clip_beat_consistency(waveform, SAMPLE_RATE, swinging_joints(0.0, seconds), FPS, np.full(55, 3.0))
    assert frames == 12 * FPS - 4 * FPS
    assert on_beat > 0.95
    assert off_beat < 0.35  # every onset half a second from the nearest stop: exp(-0.25 / 0.18) = 0.25


def test_weighted_mean_weights_by_frames() -> None:
    assert weighted_mean([1.0, 0.0], [300, 100]) == pytest.approx(0.75)
