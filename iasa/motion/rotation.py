"""Rotation formats used by SMPL-X motion: axis-angle, 3x3 matrices and the 6D representation.

All functions work on any number of leading dimensions: (..., 3) axis-angle, (..., 3, 3) matrices,
(..., 6) rot6d. The 6D representation is the first two ROWS of the rotation matrix, as in
pytorch3d and EMAGE (the official EMAGE checkpoints were trained on this convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this angle (radians) the series expansions replace sin(x)/x style ratios, which lose
# precision (or divide by zero) near the identity.
SMALL_ANGLE = 1e-4


def skew(vector: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]x, so that [v]x @ u == v x u."""
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (
        torch.stack((zero, -z, y), -1),
        torch.stack((z, zero, -x), -1),
        torch.stack((-y, x, zero), -1),
    )
    return torch.stack(rows, -2)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors (axis * angle) -> (..., 3, 3) matrices by Rodrigues' formula
    R = I + sin(t)/t [v]x + (1 - cos t)/t^2 [v]x^2, with Taylor series for small t."""
    angle = axis_angle.norm(dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = angle < SMALL_ANGLE
    safe = torch.where(small, torch.ones_like(angle), angle)
    sin_ratio = torch.where(small, 1 - angle**2 / 6, torch.sin(safe) / safe)
    cos_ratio = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    cross = skew(axis_angle)
    identity = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return identity + sin_ratio * cross + cos_ratio * (cross @ cross)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Each of the four classic formulas divides by one quaternion component; the one dividing by the
    largest component is used, which keeps the conversion accurate at every angle including pi.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * component^2 for w, x, y, z
    squared = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1
    )
    root = torch.sqrt(squared.clamp(min=0.0))  # 2 * |component|
    zy, yz = m[..., 2, 1], m[..., 1, 2]
    xz, zx = m[..., 0, 2], m[..., 2, 0]
    yx, xy = m[..., 1, 0], m[..., 0, 1]
    # Row k: the quaternion scaled by 4 * component_k (exact formulas given that component).
    candidates = torch.stack(
        (
            torch.stack((squared[..., 0], zy - yz, xz - zx, yx - xy), -1),
            torch.stack((zy - yz, squared[..., 1], yx + xy, xz + zx), -1),
            torch.stack((xz - zx, yx + xy, squared[..., 2], zy + yz), -1),
            torch.stack((yx - xy, xz + zx, zy + yz, squared[..., 3]), -1),
        ),
        -2,
    )
    candidates = candidates / (2 * root.clamp(min=1e-8))[..., None]
    best = root.argmax(-1)
    quaternion = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quaternion = F.normalize(quaternion, dim=-1)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3) rotation vectors with angle in [0, pi]
    when w >= 0."""
    vector = quaternion[..., 1:]
    sin_half = vector.norm(dim=-1, keepdim=True)
    half_angle = torch.atan2(sin_half, quaternion[..., :1])
    small = sin_half < SMALL_ANGLE
    safe = torch.where(small, torch.ones_like(sin_half), sin_half)
    # angle / sin(angle/2); near zero it tends to 2 / cos(angle/2) = 2 / w.
    scale = torch.where(small, 2 / quaternion[..., :1].clamp(min=1e-8), 2 * half_angle / safe)
    return vector * scale


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) rotation vectors, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two stored rows; the third row is their cross
    product. Any 6D vector (not only exact rotations) maps to a valid rotation."""
    first, second = rot6d[..., :3], rot6d[..., 3:]
    row0 = F.normalize(first, dim=-1)
    row1 = F.normalize(second - (row0 * second).sum(-1, keepdim=True) * row0, dim=-1)
    row2 = torch.cross(row0, row1, dim=-1)
    return torch.stack((row0, row1, row2), -2)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows, flattened."""
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def axis_angle_to_rot6d(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 6)."""
    return matrix_to_rot6d(axis_angle_to_matrix(axis_angle))


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3)."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))
