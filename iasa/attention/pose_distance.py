"""Pose distance between frames: 2D Procrustes over upper-body keypoints (the global mask's metric).

S(a, b) = min over rigid transforms tau of || P_a - tau(P_b) ||, tau = rotation + translation (and a
scale when ``align_scale``), in closed form for every pair of frames at once.

Points compared: the 12 head and upper-body points of the DWPose body (nose, neck, shoulders, elbows,
wrists, eyes, ears) and, when ``pose_hand_centroids``, one centroid per hand. The hand centroid adds
where the hand actually is (a wrist alone does not say whether the hand points up or down), while the
21 raw hand points or 68 face points would outnumber the body and turn the distance into a measure of
finger and lip shape. Points below the confidence threshold in either frame of a pair are left out of
that pair: centroids and covariances use the shared points only, and the residual is divided by their
number (a root mean square), so a pair is not favoured just because fewer points were seen.

Coordinates are measured in image heights (x scaled by width / height) so that a rotation is a rotation
of the picture, not of the normalised [0, 1] square.
"""

from __future__ import annotations

import numpy as np
import torch

from iasa.pose.keypoints import BODY_NAMES, HAND_POINTS, WholeBodyKeypoints
from iasa.video.latent_grid import latent_frame_groups

UPPER_BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
UPPER_BODY_INDICES = tuple(BODY_NAMES.index(name) for name in UPPER_BODY_NAMES)
# Below 3 shared points a similarity transform fits any two poses exactly: no evidence either way.
MIN_SHARED_POINTS = 3
# A hand centroid from a few fingertips says little about where the hand is: require half the hand.
MIN_HAND_POINTS_FOR_CENTROID = (HAND_POINTS + 1) // 2


def upper_body_points(
    keypoints: WholeBodyKeypoints, min_confidence: float, hand_centroids: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The points compared between frames.

    Returns points (F, B, 2) float64 in image heights and visible (F, B) bool, B = 12 (+ 2 hands).
    """
    height, width = keypoints.image_size
    to_heights = np.array([width / height, 1.0])
    points = keypoints.body[:, UPPER_BODY_INDICES].astype(np.float64) * to_heights
    visible = keypoints.body_score[:, UPPER_BODY_INDICES] >= min_confidence
    if hand_centroids:
        confident = keypoints.hands_score >= min_confidence  # (F, 2, 21)
        count = confident.sum(axis=-1)  # (F, 2)
        summed = (keypoints.hands.astype(np.float64) * confident[..., None]).sum(axis=2)
        centroid = summed / np.maximum(count, 1)[..., None] * to_heights  # (F, 2, 2)
        points = np.concatenate([points, centroid], axis=1)
        visible = np.concatenate([visible, count >= MIN_HAND_POINTS_FOR_CENTROID], axis=1)
    return torch.from_numpy(points), torch.from_numpy(visible)


def pairwise_pose_distance(
    points_a: torch.Tensor,
    visible_a: torch.Tensor,
    points_b: torch.Tensor,
    visible_b: torch.Tensor,
    align_scale: bool,
) -> torch.Tensor:
    """Root-mean-square residual of the best rigid (or similarity) alignment of every pose b onto a.

    points_a (Fa, B, 2), visible_a (Fa, B), points_b (Fb, B, 2), visible_b (Fb, B) -> (Fa, Fb) float64;
    +inf where a pair shares fewer than MIN_SHARED_POINTS points. Computed in NumPy: the arrays are tiny,
    and torch's intra-op thread pool costs more than the arithmetic on a busy CPU.
    """
    a, b = np.asarray(points_a, dtype=np.float64), np.asarray(points_b, dtype=np.float64)
    shared = (np.asarray(visible_a)[:, None, :] & np.asarray(visible_b)[None, :, :]).astype(np.float64)
    count = shared.sum(-1)  # (Fa, Fb)
    safe_count = np.maximum(count, 1)
    sum_a = np.einsum("ijp,ipc->ijc", shared, a)
    sum_b = np.einsum("ijp,jpc->ijc", shared, b)
    # Second moments about the shared points' own centroids (sum w x y - sum w x * sum w y / n).
    spread_a = np.einsum("ijp,ip->ij", shared, (a**2).sum(-1)) - (sum_a**2).sum(-1) / safe_count
    spread_b = np.einsum("ijp,jp->ij", shared, (b**2).sum(-1)) - (sum_b**2).sum(-1) / safe_count
    # Per-point products of a and b coordinates, (Fa, Fb, B) each, then summed over the shared points.
    xx = a[:, None, :, 0] * b[None, :, :, 0]
    yy = a[:, None, :, 1] * b[None, :, :, 1]
    yx = a[:, None, :, 1] * b[None, :, :, 0]
    xy = a[:, None, :, 0] * b[None, :, :, 1]
    dot = (shared * (xx + yy)).sum(-1) - (sum_a * sum_b).sum(-1) / safe_count
    cross = (shared * (yx - xy)).sum(-1) - (sum_a[..., 1] * sum_b[..., 0] - sum_a[..., 0] * sum_b[..., 1]) / safe_count
    # The best rotation turns b by atan2(cross, dot); the aligned overlap is then |(dot, cross)|.
    overlap = np.sqrt(dot**2 + cross**2)
    if align_scale:
        explained = np.divide(overlap**2, spread_b, out=np.zeros_like(overlap), where=spread_b > 0)
        residual = spread_a - explained
    else:
        residual = spread_a + spread_b - 2 * overlap
    distance = np.sqrt(np.maximum(residual, 0) / safe_count)
    return torch.from_numpy(np.where(count >= MIN_SHARED_POINTS, distance, np.inf))


def video_pose_distance(
    keypoints: WholeBodyKeypoints, min_confidence: float, align_scale: bool, hand_centroids: bool
) -> torch.Tensor:
    """Pose distance between every pair of video frames: (F, F) float64 (+inf: not comparable)."""
    points, visible = upper_body_points(keypoints, min_confidence, hand_centroids)
    return pairwise_pose_distance(points, visible, points, visible, align_scale)


def latent_pose_distance(video_distance: torch.Tensor) -> torch.Tensor:
    """Pose distance between latent frames: the mean distance over the pairs of video frames they cover.

    Averaging pairwise distances (rather than averaging poses first) keeps the rigid invariance of each
    comparison and needs no choice of a representative pose. video_distance (F, F), F = 4n + 1 ->
    (T, T) float64; pairs of video frames that cannot be compared (+inf) are left out of the mean, and a
    latent pair with none comparable is +inf.
    """
    video = np.asarray(video_distance, dtype=np.float64)
    groups = latent_frame_groups(video.shape[0])
    membership = np.zeros((len(groups), video.shape[0]))
    for latent, frames in enumerate(groups):
        membership[latent, list(frames)] = 1.0
    comparable = np.isfinite(video)
    total = membership @ np.where(comparable, video, 0.0) @ membership.T
    count = membership @ comparable.astype(np.float64) @ membership.T
    mean = np.divide(total, count, out=np.full_like(total, np.inf), where=count > 0)
    return torch.from_numpy(mean)
