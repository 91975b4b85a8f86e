"""SMPL-X motion -> 2D whole-body keypoints in the DWPose layout, for a front camera on a talking person."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iasa.motion.motion_file import SmplxMotion
from iasa.config import ConfigError
from iasa.pose.alignment import LimbRetarget, Similarity2D, fit_limb_retarget, fit_similarity
from iasa.pose.camera import PinholeCamera, framing_camera
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


@dataclass(frozen=True)
class FacingTurn:
    """A turn of (T, P, 3) points by rotation (3, 3) about the vertical axis through centre (3,)."""

    rotation: np.ndarray
    centre: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return ((points - self.centre) @ self.rotation.T + self.centre).astype(np.float32)


def facing_turn(points: np.ndarray, motion: SmplxMotion) -> FacingTurn | None:
    """The turn about the vertical axis through the mean pelvis of (T, P, 3) points that makes the root's mean
    forward direction (its local +Z) point at +Z, the camera; None when it faces straight up or down."""
    forward = axis_angle_to_matrix(motion.poses[:, :3].astype(np.float64))[:, :, 2].mean(axis=0)
    if np.hypot(forward[0], forward[2]) < 1e-6:  # facing straight up or down: no meaningful yaw
        return None
    yaw = np.arctan2(forward[0], forward[2])
    cos, sin = np.cos(-yaw), np.sin(-yaw)
    about_y = np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])
    return FacingTurn(about_y, points[:, PELVIS].mean(axis=0))


ALIGNMENTS = ("unianimate", "similarity")


def fit_alignment(
    body: np.ndarray, body_score: np.ndarray, reference: WholeBodyKeypoints, config: PoseConfig
) -> LimbRetarget | Similarity2D | None:
    """How ``config.alignment`` lays a clip onto the reference's first frame, fitted on the clip's first frame:
    its body (18, 2) in pixels and scores (18,). None, with a warning, when the reference lacks the points the
    fit needs (the clip keeps the default framing)."""
    if config.alignment not in ALIGNMENTS:
        raise ConfigError(f"pose.alignment must be one of {ALIGNMENTS}, got {config.alignment!r}")
    height, width = reference.image_size
    target = reference.body[0].astype(np.float64) * np.array([width, height])
    confident = reference.body_score[0] >= config.align_min_score
    if config.alignment == "unianimate":
        shoulders = [BODY_NAMES.index("right_shoulder"), BODY_NAMES.index("left_shoulder")]
        if not confident[shoulders].all():
            warnings.warn(
                f"reference keypoints lack a confident shoulder (score >= {config.align_min_score}); "
                "keeping the default framing",
                stacklevel=4,
            )
            return None
        return fit_limb_retarget(target, confident, body)
    chosen = np.isin(np.array(BODY_NAMES), config.align_body_points)
    shared = chosen & (body_score > 0) & confident
    if shared.sum() < 2:
        warnings.warn(
            f"reference keypoints share only {int(shared.sum())} confident body points with the skeleton "
            f"(of {list(config.align_body_points)}); keeping the default framing",
            stacklevel=4,
        )
        return None
    return fit_similarity(body[shared], target[shared])


def apply_alignment(parts: dict[str, np.ndarray], alignment: LimbRetarget | Similarity2D | None) -> dict[str, np.ndarray]:
    """The DWPose parts in pixels (coco_wholebody_to_dwpose's dict: body (T, 18, 2), feet (T, 6, 2), hands
    (T, 2, 21, 2), face (T, 68, 2) and their scores) moved by the alignment (None: unchanged)."""
    if isinstance(alignment, LimbRetarget):
        aligned = alignment.apply(parts["body"], parts["feet"], parts["hands"], parts["face"])
        return parts | dict(zip(("body", "feet", "hands", "face"), aligned))
    if isinstance(alignment, Similarity2D):
        return parts | {name: alignment.apply(parts[name]) for name in POINT_PARTS}
    return parts


@dataclass(frozen=True)
class KeypointFraming:
    """How motion is put into the picture, fitted once and then applied to every frame: the turn that faces
    the camera (None: none), the camera, the alignment onto the reference pose (None: none) and the image size
    (height, width). fit_keypoint_framing fits it on a clip; a live stream fits it on its first frame."""

    turn: FacingTurn | None
    camera: PinholeCamera
    alignment: LimbRetarget | Similarity2D | None
    image_size: tuple[int, int]


def fit_keypoint_framing(
    motion: SmplxMotion,
    config: PoseConfig | None = None,
    smplx_dir: str | Path | None = None,
    reference: WholeBodyKeypoints | None = None,
) -> KeypointFraming:
    """The framing motion_to_keypoints gives ``motion`` (at least one frame): the turn from its mean forward
    direction and pelvis, the camera on its mean pelvis, the alignment fitted on its first frame."""
    config = config or PoseConfig()
    return _fit_framing(motion_points(motion, config, smplx_dir), motion, config, reference)


def _fit_framing(
    points: np.ndarray, motion: SmplxMotion, config: PoseConfig, reference: WholeBodyKeypoints | None
) -> KeypointFraming:
    """fit_keypoint_framing on the motion's (T, 144, 3) points."""
    turn = facing_turn(points, motion) if config.face_camera and motion.num_frames else None
    if turn is not None:
        points = turn.apply(points)
    image_size = reference.image_size if reference is not None else (config.image_height, config.image_width)
    anchor = points[:, PELVIS].mean(axis=0) if motion.num_frames else np.zeros(3)
    camera = framing_camera(config, anchor, image_size)
    alignment = None
    if reference is not None and motion.num_frames:
        pixels, in_front = camera.project(smplx_to_coco_wholebody(points[:1]).astype(np.float64))
        first = coco_wholebody_to_dwpose(pixels, in_front.astype(np.float32))
        alignment = fit_alignment(first["body"][0], first["body_score"][0], reference, config)
    return KeypointFraming(turn, camera, alignment, (int(image_size[0]), int(image_size[1])))


def motion_to_keypoints(
    motion: SmplxMotion,
    config: PoseConfig | None = None,
    smplx_dir: str | Path | None = None,
    reference: WholeBodyKeypoints | None = None,
    framing: KeypointFraming | None = None,
) -> WholeBodyKeypoints:
    """The DWPose keypoints (T frames) of ``motion`` seen by the upper-body camera of ``config``.

    With ``reference`` (keypoints of the reference image; frame 0 is used) the image size is the
    reference's and the clip is laid onto the reference pose by ``config.alignment`` (fit_alignment).
    ``framing``: the turn, camera and alignment to use (fit_keypoint_framing; a stream fits them on its first
    frame and keeps them); None = fitted on this motion. Each frame's keypoints depend only on that frame and
    the framing. Points outside the image or behind the camera get score 0 and are clipped to [0, 1].
    """
    config = config or PoseConfig()
    points = motion_points(motion, config, smplx_dir)
    if framing is None:
        framing = _fit_framing(points, motion, config, reference)
    if framing.turn is not None:
        points = framing.turn.apply(points)
    pixels, in_front = framing.camera.project(smplx_to_coco_wholebody(points).astype(np.float64))
    parts = apply_alignment(coco_wholebody_to_dwpose(pixels, in_front.astype(np.float32)), framing.alignment)

    height, width = framing.image_size
    for name in POINT_PARTS:
        normalized = parts[name] / np.array([width, height])
        inside = (parts[f"{name}_score"] > 0) & ((normalized >= 0) & (normalized <= 1)).all(axis=-1)
        parts[name] = np.clip(normalized, 0.0, 1.0).astype(np.float32)
        parts[f"{name}_score"] = inside.astype(np.float32)
    return WholeBodyKeypoints(**parts, image_size=(int(height), int(width)))
