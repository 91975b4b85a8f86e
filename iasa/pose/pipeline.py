"""SMPL-X motion -> 2D whole-body keypoints in the DWPose layout, for a front camera on a talking person."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from iasa.motion.motion_file import SmplxMotion
from iasa.config import ConfigError
from iasa.pose.alignment import fit_limb_retarget, fit_similarity
from iasa.pose.camera import framing_camera
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import BODY_NAMES, POINT_PARTS, WholeBodyKeypoints
from iasa.pose.skeleton import axis_angle_to_matrix, builtin_skeleton_points
from iasa.pose.wholebody import coco_wholebody_to_dwpose, smplx_to_coco_wholebody

PELVIS = 0


def motion_points(motion: SmplxMotion, config: PoseConfig, smplx_dir: str | Path | None = None) -> np.ndarray:
    """(T, 144, 3) points in the smplx joint layout: from the SMPL-X model when a model folder is given
    (argument or ``config.smplx_dir``), else from the built-in skeleton."""
    smplx_dir = smplx_dir or config.smplx_dir
    if not smplx_dir:
        return builtin_skeleton_points(motion)
    from iasa.pose.smplx_model import smplx_points

    return smplx_points(motion, smplx_dir, config.smplx_flat_hand_mean, config.smplx_chunk_frames)


def turn_to_face_camera(points: np.ndarray, motion: SmplxMotion) -> np.ndarray:
    """Rotate (T, P, 3) points about the vertical axis through the mean pelvis so that the root's mean
    forward direction (its local +Z) points at +Z, the camera."""
    forward = axis_angle_to_matrix(motion.poses[:, :3].astype(np.float64))[:, :, 2].mean(axis=0)
    if np.hypot(forward[0], forward[2]) < 1e-6:  # facing straight up or down: no meaningful yaw
        return points
    yaw = np.arctan2(forward[0], forward[2])
    cos, sin = np.cos(-yaw), np.sin(-yaw)
    about_y = np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])
    centre = points[:, PELVIS].mean(axis=0)
    return ((points - centre) @ about_y.T + centre).astype(np.float32)


ALIGNMENTS = ("unianimate", "similarity")


def align_to_reference(
    parts: dict[str, np.ndarray], reference: WholeBodyKeypoints, config: PoseConfig
) -> dict[str, np.ndarray]:
    """The clip's DWPose parts in pixels (coco_wholebody_to_dwpose's dict: body (T, 18, 2), feet (T, 6, 2),
    hands (T, 2, 21, 2), face (T, 68, 2) and their scores) laid onto the reference's first frame by
    ``config.alignment``, fitted on the clip's first frame. Unchanged, with a warning, when the reference lacks
    the points the fit needs."""
    if config.alignment not in ALIGNMENTS:
        raise ConfigError(f"pose.alignment must be one of {ALIGNMENTS}, got {config.alignment!r}")
    height, width = reference.image_size
    target = reference.body[0].astype(np.float64) * np.array([width, height])
    confident = reference.body_score[0] >= config.align_min_score
    body = parts["body"]
    if config.alignment == "unianimate":
        shoulders = [BODY_NAMES.index("right_shoulder"), BODY_NAMES.index("left_shoulder")]
        if not confident[shoulders].all():
            warnings.warn(
                f"reference keypoints lack a confident shoulder (score >= {config.align_min_score}); "
                "keeping the default framing",
                stacklevel=3,
            )
            return parts
        retarget = fit_limb_retarget(target, confident, body[0])
        aligned = dict(zip(("body", "feet", "hands", "face"), retarget.apply(body, parts["feet"], parts["hands"], parts["face"])))
        return parts | aligned
    chosen = np.isin(np.array(BODY_NAMES), config.align_body_points)
    shared = chosen & (parts["body_score"][0] > 0) & confident
    if shared.sum() < 2:
        warnings.warn(
            f"reference keypoints share only {int(shared.sum())} confident body points with the skeleton "
            f"(of {list(config.align_body_points)}); keeping the default framing",
            stacklevel=3,
        )
        return parts
    similarity = fit_similarity(body[0][shared], target[shared])
    return parts | {name: similarity.apply(parts[name]) for name in POINT_PARTS}


def motion_to_keypoints(
    motion: SmplxMotion,
    config: PoseConfig | None = None,
    smplx_dir: str | Path | None = None,
    reference: WholeBodyKeypoints | None = None,
) -> WholeBodyKeypoints:
    """The DWPose keypoints (T frames) of ``motion`` seen by the upper-body camera of ``config``.

    With ``reference`` (keypoints of the reference image; frame 0 is used) the image size is the
    reference's and the clip is laid onto the reference pose by ``config.alignment`` (align_to_reference).
    Points outside the image or behind the camera get score 0 and are clipped to [0, 1].
    """
    config = config or PoseConfig()
    points = motion_points(motion, config, smplx_dir)
    if config.face_camera and motion.num_frames:
        points = turn_to_face_camera(points, motion)
    image_size = reference.image_size if reference is not None else (config.image_height, config.image_width)
    anchor = points[:, PELVIS].mean(axis=0) if motion.num_frames else np.zeros(3)
    camera = framing_camera(config, anchor, image_size)
    pixels, in_front = camera.project(smplx_to_coco_wholebody(points).astype(np.float64))
    parts = coco_wholebody_to_dwpose(pixels, in_front.astype(np.float32))
    if reference is not None and motion.num_frames:
        parts = align_to_reference(parts, reference, config)

    height, width = image_size
    for name in POINT_PARTS:
        normalized = parts[name] / np.array([width, height])
        inside = (parts[f"{name}_score"] > 0) & ((normalized >= 0) & (normalized <= 1)).all(axis=-1)
        parts[name] = np.clip(normalized, 0.0, 1.0).astype(np.float32)
        parts[f"{name}_score"] = inside.astype(np.float32)
    return WholeBodyKeypoints(**parts, image_size=(int(height), int(width)))
