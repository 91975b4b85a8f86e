"""The SMPL-X path with a synthetic model file written here in the official SMPLX_NEUTRAL_2020.npz layout."""

from pathlib import Path

import numpy as np
import pytest

from iasa.motion.motion_file import SmplxMotion
from iasa.pose.config import PoseConfig
from iasa.pose.pipeline import motion_to_keypoints
from iasa.pose.skeleton import builtin_skeleton_points
from iasa.pose.smplx_model import SmplxModelMissingError, load_smplx_model, smplx_points

@pytest.fixture(scope="module")
def smplx_dir(tmp_path_factory: pytest.TempPathFactory, write_smplx_model) -> Path:
    return write_smplx_model(tmp_path_factory.mktemp("body_models"))


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
