"""The SMPL-X path with a synthetic model file written here in the official SMPLX_NEUTRAL_2020.npz layout."""

from pathlib import Path

import numpy as np
import pytest

from iasa.motion.motion_file import SmplxMotion
from iasa.pose.config import PoseConfig
from iasa.pose.pipeline import motion_to_keypoints
from iasa.pose.skeleton import REST_JOINTS, SMPLX_PARENTS, builtin_skeleton_points
from iasa.pose.smplx_model import SmplxModelMissingError, load_smplx_model, smplx_points

NUM_VERTICES, NUM_FACES = 10475, 20908  # smplx hard-codes vertex ids of the extra joints: the count must match


def write_synthetic_smplx(folder: Path, seed: int = 0) -> Path:
    """A SMPL-X 2020 file with the official keys and shapes, zero blend shapes and a joint regressor that
    averages a block of vertices clustered (zero-mean) around each joint of the built-in skeleton, each
    vertex skinned to its joint only. Its joints are then the built-in skeleton's, posed by smplx's LBS."""
    rng = np.random.default_rng(seed)
    owner = np.arange(NUM_VERTICES) % 55
    offsets = rng.normal(scale=0.01, size=(NUM_VERTICES, 3))
    for joint in range(55):
        offsets[owner == joint] -= offsets[owner == joint].mean(axis=0)
    regressor = np.zeros((55, NUM_VERTICES), np.float32)
    regressor[owner, np.arange(NUM_VERTICES)] = 1.0
    regressor /= regressor.sum(axis=1, keepdims=True)
    kintree = np.stack([SMPLX_PARENTS, np.arange(55)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # the official files store the root's parent as uint32 -1
    arrays = {
        "v_template": (REST_JOINTS[owner] + offsets).astype(np.float32),
        "f": rng.integers(0, NUM_VERTICES, size=(NUM_FACES, 3)).astype(np.uint32),
        "shapedirs": np.zeros((NUM_VERTICES, 3, 400), np.float32),
        "posedirs": np.zeros((NUM_VERTICES, 3, 486), np.float32),
        "J_regressor": regressor,
        "weights": np.eye(55, dtype=np.float32)[owner],
        "kintree_table": kintree,
        "hands_componentsl": np.eye(45, dtype=np.float32), "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": np.zeros(45, np.float32), "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": rng.integers(0, NUM_FACES, size=51).astype(np.int64),
        "lmk_bary_coords": rng.dirichlet(np.ones(3), size=51).astype(np.float32),
        "dynamic_lmk_faces_idx": rng.integers(0, NUM_FACES, size=(79, 17)).astype(np.int64),
        "dynamic_lmk_bary_coords": rng.dirichlet(np.ones(3), size=(79, 17)).astype(np.float32),
    }  # fmt: skip
    (folder / "smplx").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "smplx" / "SMPLX_NEUTRAL_2020.npz", **arrays)
    return folder


@pytest.fixture(scope="module")
def smplx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_smplx(tmp_path_factory.mktemp("body_models"))


def random_motion(frames: int, seed: int = 0, scale: float = 0.3) -> SmplxMotion:
    rng = np.random.default_rng(seed)
    motion = SmplxMotion.still(frames)
    motion.poses = rng.normal(scale=scale, size=motion.poses.shape).astype(np.float32)
    motion.trans = rng.normal(scale=0.1, size=motion.trans.shape).astype(np.float32)
    return motion


def test_smplx_joints_match_the_builtin_forward_kinematics(smplx_dir: Path) -> None:
    motion = random_motion(frames=5)
    points = smplx_points(motion, smplx_dir, chunk_frames=2)  # chunks of 2, 2, 1 frames
    assert points.shape == (5, 144, 3) and np.isfinite(points).all()
    np.testing.assert_allclose(points[:, :55], builtin_skeleton_points(motion)[:, :55], atol=1e-4)


def test_keypoints_from_smplx_match_the_builtin_skeleton_on_joint_points(smplx_dir: Path) -> None:
    motion = random_motion(frames=3, scale=0.1)
    config = PoseConfig(face_camera=False)
    from_smplx = motion_to_keypoints(motion, config, smplx_dir=smplx_dir)
    builtin = motion_to_keypoints(motion, config)
    # Shoulders, elbows, wrists, hips, knees, ankles come from the 55 joints in both; the neck from shoulders.
    joint_points = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    np.testing.assert_allclose(from_smplx.body[:, joint_points], builtin.body[:, joint_points], atol=1e-4)
    np.testing.assert_allclose(from_smplx.hands[:, :, 1:4], builtin.hands[:, :, 1:4], atol=1e-4)  # thumb joints


def test_missing_model_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(SmplxModelMissingError) as error:
        load_smplx_model(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "smplx" / "SMPLX_NEUTRAL_2020.npz") in message
    assert "smpl-x.is.tue.mpg.de" in message and "--smplx_dir" in message
