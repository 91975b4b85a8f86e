"""Pose distance (masked 2D Procrustes) and the video -> latent frame mapping."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from iasa.video.latent_grid import latent_frame_groups, num_latent_frames
from iasa.attention.pose_distance import (
    UPPER_BODY_INDICES,
    latent_pose_distance,
    pairwise_pose_distance,
    upper_body_points,
    video_pose_distance,
)
from iasa.pose.synthetic_speaker import synthetic_speaker


def optimised_distance(a: np.ndarray, b: np.ndarray, with_scale: bool) -> float:
    """min over (angle, scale, shift) of the RMS of a - (s R b + t), by numerical search from many starts."""

    def residual(params):
        angle, log_scale, tx, ty = params
        s = np.exp(log_scale) if with_scale else 1.0
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        moved = s * b @ rotation.T + [tx, ty]
        return ((a - moved) ** 2).sum()

    best = min(
        minimize(residual, [angle, 0.0, 0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000}).fun
        for angle in np.linspace(-np.pi, np.pi, 8, endpoint=False)
    )
    return float(np.sqrt(best / len(a)))


@pytest.mark.parametrize("with_scale", [False, True])
def test_closed_form_matches_numerical_minimum(with_scale):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 7, 2))
    b = rng.normal(size=(6, 7, 2))
    visible = np.ones((6, 7), dtype=bool)
    distance = pairwise_pose_distance(torch.from_numpy(a), torch.from_numpy(visible), torch.from_numpy(b), torch.from_numpy(visible), with_scale)
    for i, j in [(0, 0), (1, 3), (5, 2)]:
        assert distance[i, j].item() == pytest.approx(optimised_distance(a[i], b[j], with_scale), rel=1e-5, abs=1e-8)


def test_points_missing_in_either_frame_are_left_out_of_that_pair():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(3, 8, 2))
    visible = np.ones((3, 8), dtype=bool)
    visible[1, 2] = False  # unseen in frame 1: pairs with frame 1 ignore point 2 on both sides
    distance = pairwise_pose_distance(torch.from_numpy(points), torch.from_numpy(visible), torch.from_numpy(points), torch.from_numpy(visible), False)
    shared = [p for p in range(8) if p != 2]
    assert distance[0, 1].item() == pytest.approx(optimised_distance(points[0, shared], points[1, shared], False), rel=1e-5)
    assert distance[0, 2].item() == pytest.approx(optimised_distance(points[0], points[2], False), rel=1e-5)
    moved = points.copy()
    moved[1, 2] += 100.0  # where an unseen point lies cannot matter
    again = pairwise_pose_distance(torch.from_numpy(moved), torch.from_numpy(visible), torch.from_numpy(moved), torch.from_numpy(visible), False)
    assert torch.allclose(again, distance)


def test_pairs_sharing_fewer_than_three_points_are_incomparable():
    points = torch.randn(2, 5, 2, dtype=torch.float64)
    visible = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    distance = pairwise_pose_distance(points, visible, points, visible, False)
    assert torch.isinf(distance[0, 1]) and torch.isinf(distance[1, 0])
    assert distance[0, 0] == pytest.approx(0.0, abs=1e-6) and distance[1, 1] == pytest.approx(0.0, abs=1e-6)


def _transform_frame(keypoints, frame, angle, shift, scale):
    """Rotate/scale/shift one frame's keypoints about the image centre, in pixels (normalised back)."""
    height, width = keypoints.image_size
    to_pixels = np.array([width, height])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = to_pixels / 2
    for name in ("body", "hands", "face"):
        array = getattr(keypoints, name)
        pixels = array[frame] * to_pixels
        moved = scale * (pixels - centre) @ rotation.T + centre + np.asarray(shift) * to_pixels
        array[frame] = moved / to_pixels


@settings(max_examples=25, deadline=None)
@given(
    frame=st.integers(0, 8),
    angle=st.floats(-np.pi, np.pi),
    shift=st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3)),
    hand_centroids=st.booleans(),
)
def test_rotating_and_shifting_one_frame_leaves_its_distances_unchanged(frame, angle, shift, hand_centroids):
    keypoints = synthetic_speaker(9, (96, 160), seed=3)
    before = video_pose_distance(keypoints, 0.3, False, hand_centroids)
    _transform_frame(keypoints, frame, angle, shift, 1.0)
    after = video_pose_distance(keypoints, 0.3, False, hand_centroids)
    # Keypoints are stored as float32: compare at that precision (distances are ~1e-2).
    assert torch.allclose(before, after, atol=2e-6)


@settings(max_examples=15, deadline=None)
@given(frame=st.integers(0, 8), angle=st.floats(-np.pi, np.pi), scale=st.floats(0.5, 2.0))
def test_with_align_scale_a_scaled_key_frame_keeps_its_distances(frame, angle, scale):
    keypoints = synthetic_speaker(9, (128, 128), seed=4)
    before = video_pose_distance(keypoints, 0.3, True, True)
    _transform_frame(keypoints, frame, angle, (0.05, -0.02), scale)
    after = video_pose_distance(keypoints, 0.3, True, True)
    # S(a, b) aligns b onto a, so the distances with the scaled frame as b are unchanged.
    assert torch.allclose(before[:, frame], after[:, frame], atol=2e-6)


def test_distances_are_measured_in_image_heights():
    keypoints = synthetic_speaker(5, (100, 300), seed=5)
    points, visible = upper_body_points(keypoints, 0.3, hand_centroids=False)
    assert points.shape == (5, len(UPPER_BODY_INDICES), 2)
    assert np.allclose(points[..., 0], keypoints.body[:, UPPER_BODY_INDICES, 0] * 3.0)
    assert np.allclose(points[..., 1], keypoints.body[:, UPPER_BODY_INDICES, 1])


def test_hand_centroid_needs_half_the_hand():
    keypoints = synthetic_speaker(5, (128, 128), seed=6)
    keypoints.hands_score[2, 0, :] = 0.0
    keypoints.hands_score[2, 0, :11] = 1.0  # 11 of 21 points: enough
    keypoints.hands_score[3, 1, :] = 0.0
    keypoints.hands_score[3, 1, :10] = 1.0  # 10 of 21: not enough
    points, visible = upper_body_points(keypoints, 0.3, hand_centroids=True)
    assert visible[2, -2] and not visible[3, -1]
    assert np.allclose(points[2, -2].numpy(), keypoints.hands[2, 0, :11].mean(0), atol=1e-6)


@pytest.mark.parametrize("frames, groups", [(1, [[0]]), (5, [[0], [1, 2, 3, 4]]), (9, [[0], [1, 2, 3, 4], [5, 6, 7, 8]])])
def test_latent_frames_follow_the_wan_vae(frames, groups):
    assert [list(g) for g in latent_frame_groups(frames)] == groups
    assert num_latent_frames(81) == 21


@pytest.mark.parametrize("frames", [0, 2, 80, 82])
def test_other_lengths_are_a_clear_error(frames):
    with pytest.raises(ValueError, match="4n \\+ 1"):
        num_latent_frames(frames)


def test_latent_distance_is_the_mean_over_covered_video_pairs():
    rng = np.random.default_rng(7)
    video = torch.from_numpy(rng.uniform(size=(9, 9)))
    video[3, 6] = torch.inf  # incomparable pairs are left out of the mean
    latent = latent_pose_distance(video)
    groups = latent_frame_groups(9)
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            values = [video[a, b].item() for a in gi for b in gj if np.isfinite(video[a, b].item())]
            assert latent[i, j].item() == pytest.approx(np.mean(values))
    all_inf = torch.full((5, 5), torch.inf, dtype=torch.float64)
    assert torch.isinf(latent_pose_distance(all_inf)).all()
