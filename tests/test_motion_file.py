from pathlib import Path

import numpy as np
import pytest

from iasa.motion.motion_file import MotionFileError, SmplxMotion


def random_motion(frames: int = 7, seed: int = 0) -> SmplxMotion:
    rng = np.random.default_rng(seed)
    return SmplxMotion(
        poses=rng.normal(size=(frames, 165)), expressions=rng.normal(size=(frames, 100)),
        trans=rng.normal(size=(frames, 3)), betas=rng.normal(size=300), fps=25.0, gender="female",
    )  # fmt: skip


def write_npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)
    return path


def beat_arrays(frames: int = 4) -> dict[str, np.ndarray]:
    """The arrays of a BEAT2 SMPL-X file, written here by hand in that layout."""
    return {
        "poses": np.zeros((frames, 165)), "expressions": np.zeros((frames, 100)), "trans": np.zeros((frames, 3)),
        "betas": np.zeros(300), "model": np.array("smplx2020"), "gender": np.array("neutral"),
        "mocap_frame_rate": np.array(30),
    }  # fmt: skip


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    motion = random_motion()
    motion.save(tmp_path / "clip.npz")
    loaded = SmplxMotion.load(tmp_path / "clip.npz")
    for name in ("poses", "expressions", "trans", "betas"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(motion, name).astype(np.float32))
        assert getattr(loaded, name).dtype == np.float32
    assert (loaded.fps, loaded.model, loaded.gender) == (25.0, "smplx2020", "female")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]  # no temporary left


def test_file_has_the_beat_keys(tmp_path: Path) -> None:
    random_motion(frames=3).save(tmp_path / "clip.npz")
    with np.load(tmp_path / "clip.npz") as data:
        assert set(data.files) == {"poses", "expressions", "trans", "betas", "model", "gender", "mocap_frame_rate"}
        assert data["poses"].shape == (3, 165) and data["betas"].shape == (300,)
        assert str(data["model"]) == "smplx2020" and float(data["mocap_frame_rate"]) == 25.0


def test_a_file_in_the_beat_layout_loads(tmp_path: Path) -> None:
    motion = SmplxMotion.load(write_npz(tmp_path / "beat.npz", **beat_arrays(frames=4)))
    assert motion.num_frames == 4 and motion.fps == 30.0 and motion.duration_s == pytest.approx(4 / 30)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expressions": None}, "missing keys ['expressions']"),
        ({"poses": np.zeros((4, 156))}, "'poses' has shape (4, 156), expected (frames, 165)"),
        ({"trans": np.zeros((5, 3))}, "'trans' has 5 frames but 'poses' has 4"),
        ({"betas": np.zeros(10)}, "'betas' has shape (10,), expected (300,)"),
        ({"poses": np.full((4, 165), np.nan)}, "'poses' holds NaN"),
        ({"mocap_frame_rate": np.array([30, 30])}, "'mocap_frame_rate' must be one number"),
        ({"mocap_frame_rate": np.array(0.0)}, "frame rate must be positive"),
        ({"poses": np.array([["a"] * 165] * 4)}, "'poses' has dtype"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, change: dict, message: str) -> None:
    arrays = beat_arrays()
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MotionFileError) as error:
        SmplxMotion.load(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_not_an_npz_and_missing_file_are_errors(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(MotionFileError, match="not a readable motion .npz"):
        SmplxMotion.load(tmp_path / "text.npz")
    with pytest.raises(MotionFileError, match="does not exist"):
        SmplxMotion.load(tmp_path / "absent.npz")


def test_constructor_validates_shapes() -> None:
    with pytest.raises(MotionFileError, match="'expressions' has 2 frames but 'poses' has 3"):
        SmplxMotion(poses=np.zeros((3, 165)), expressions=np.zeros((2, 100)), trans=np.zeros((3, 3)), betas=np.zeros(300))


def test_still_motion_is_the_rest_pose() -> None:
    motion = SmplxMotion.still(5)
    assert motion.poses.shape == (5, 165) and not motion.poses.any() and motion.fps == 30.0
