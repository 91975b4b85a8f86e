"""Pinhole projection of 3D points for a front view of the person (SMPL-X is Y up and faces +Z)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iasa.pose.config import PoseConfig


@dataclass(frozen=True)
class PinholeCamera:
    """A camera at ``position`` looking along -Z with Y up: u = cx + f X / Z, v = cy - f Y / Z, where
    (X, Y, Z) is the point relative to the camera with Z its distance in front of it."""

    focal_px: float
    cx: float
    cy: float
    position: tuple[float, float, float]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world points -> (..., 2) pixel coordinates (u right, v down) and (...,) a mask of the
        points in front of the camera (the others get finite but meaningless coordinates)."""
        relative = points - np.asarray(self.position)
        depth = -relative[..., 2]
        in_front = depth > 1e-6
        safe_depth = np.where(in_front, depth, 1.0)
        u = self.cx + self.focal_px * relative[..., 0] / safe_depth
        v = self.cy - self.focal_px * relative[..., 1] / safe_depth
        return np.stack([u, v], axis=-1), in_front


def framing_camera(config: PoseConfig, rest_pelvis: np.ndarray, image_size: tuple[int, int]) -> PinholeCamera:
    """The upper-body talking-shot camera of ``config`` for a person whose rest-pose pelvis is at
    ``rest_pelvis`` (3,), rendering ``image_size`` = (height, width)."""
    height, width = image_size
    target = np.asarray(rest_pelvis, dtype=np.float64) + (0.0, config.frame_center_above_pelvis_m, 0.0)
    focal = height * config.camera_distance_m / config.framed_height_m
    position = tuple(float(x) for x in target + (0.0, 0.0, config.camera_distance_m))
    return PinholeCamera(focal_px=focal, cx=width / 2.0, cy=height / 2.0, position=position)
