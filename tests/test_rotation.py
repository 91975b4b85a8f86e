import numpy as np
import torch
from scipy.spatial.transform import Rotation

from iasa.motion.rotation import (
    axis_angle_to_matrix,
    axis_angle_to_rot6d,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_axis_angle,
    rot6d_to_matrix,
)


def sample_rotation_vectors(count: int = 2000) -> np.ndarray:
    """Random rotation vectors plus the hard cases: zero, tiny angles, and angles at and near pi."""
    rng = np.random.default_rng(0)
    axes = rng.standard_normal((count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = rng.uniform(0, np.pi, count)
    angles[:50] = 0.0
    angles[50:100] = rng.uniform(0, 1e-5, 50)
    angles[100:150] = np.pi - rng.uniform(0, 1e-5, 50)
    angles[150:200] = np.pi
    return axes * angles[:, None]


def test_axis_angle_to_matrix_matches_scipy() -> None:
    vectors = sample_rotation_vectors()
    ours = axis_angle_to_matrix(torch.from_numpy(vectors)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(vectors).as_matrix(), atol=1e-10)


def test_matrix_to_axis_angle_matches_scipy_as_rotations() -> None:
    vectors = sample_rotation_vectors()
    matrices = Rotation.from_rotvec(vectors).as_matrix()
    ours = matrix_to_axis_angle(torch.from_numpy(matrices)).numpy()
    # At exactly pi, v and -v are the same rotation, so compare rotations, not vectors.
    difference = Rotation.from_rotvec(ours) * Rotation.from_matrix(matrices).inv()
    assert difference.magnitude().max() < 1e-9
    assert np.linalg.norm(ours, axis=1).max() <= np.pi + 1e-9
    below_pi = np.linalg.norm(vectors, axis=1) < np.pi - 1e-3
    np.testing.assert_allclose(ours[below_pi], vectors[below_pi], atol=1e-9)


def test_rot6d_is_the_first_two_rows() -> None:
    quarter_turn_about_z = torch.tensor([0.0, 0.0, np.pi / 2], dtype=torch.float64)
    expected_rows = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(axis_angle_to_rot6d(quarter_turn_about_z).numpy(), expected_rows.reshape(6).numpy(), atol=1e-12)


def test_rot6d_round_trips() -> None:
    vectors = torch.from_numpy(sample_rotation_vectors())
    matrices = axis_angle_to_matrix(vectors)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(matrices)).numpy(), matrices.numpy(), atol=1e-12)
    back = rot6d_to_axis_angle(axis_angle_to_rot6d(vectors)).numpy()
    difference = Rotation.from_rotvec(back) * Rotation.from_rotvec(vectors.numpy()).inv()
    assert difference.magnitude().max() < 1e-9


def test_rot6d_to_matrix_orthonormalises_any_input() -> None:
    raw = torch.randn(500, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    matrices = rot6d_to_matrix(raw).numpy()
    np.testing.assert_allclose(matrices @ matrices.transpose(0, 2, 1), np.broadcast_to(np.eye(3), matrices.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(matrices), 1.0, atol=1e-12)
    # Gram-Schmidt keeps the direction of the first row and the plane of the first two.
    first = raw[:, :3].numpy() / np.linalg.norm(raw[:, :3].numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(matrices[:, 0], first, atol=1e-12)
    np.testing.assert_allclose(np.einsum("nc,nc->n", matrices[:, 2], raw[:, 3:].numpy()), 0.0, atol=1e-12)


def test_float32_batches_keep_their_shape() -> None:
    rot6d = torch.randn(2, 7, 55, 6)
    assert rot6d_to_axis_angle(rot6d).shape == (2, 7, 55, 3)
    assert rot6d_to_axis_angle(rot6d).dtype == torch.float32
