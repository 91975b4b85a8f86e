from pathlib import Path

import numpy as np
import pytest

from iasa.pose.keypoints import KeypointFileError, WholeBodyKeypoints


def random_keypoints(frames: int = 4, seed: int = 0) -> WholeBodyKeypoints:
    rng = np.random.default_rng(seed)
    return WholeBodyKeypoints(
        body=rng.random((frames, 18, 2), np.float32), body_score=rng.random((frames, 18), np.float32),
        hands=rng.random((frames, 2, 21, 2), np.float32), hands_score=rng.random((frames, 2, 21), np.float32),
        face=rng.random((frames, 68, 2), np.float32), face_score=rng.random((frames, 68), np.float32),
        image_size=(832, 480),
    )  # fmt: skip


def assert_same(a: WholeBodyKeypoints, b: WholeBodyKeypoints) -> None:
    for name in ("body", "body_score", "hands", "hands_score", "face", "face_score"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.image_size == b.image_size


def test_file_round_trip_leaves_no_temporary(tmp_path: Path) -> None:
    keypoints = random_keypoints()
    keypoints.save(tmp_path / "clip_keypoints.npz")
    assert_same(WholeBodyKeypoints.load(tmp_path / "clip_keypoints.npz"), keypoints)
    assert [p.name for p in tmp_path.iterdir()] == ["clip_keypoints.npz"]


def test_dwpose_dicts_round_trip() -> None:
    keypoints = random_keypoints(frames=3)
    frames = keypoints.to_dwpose_dicts()
    assert frames[0]["bodies"]["candidate"].shape == (18, 2) and frames[0]["faces"].shape == (1, 68, 2)
    assert_same(WholeBodyKeypoints.from_dwpose_dicts(frames, (832, 480)), keypoints)


def test_bad_files_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "partial.npz", body=np.zeros((2, 18, 2)))
    with pytest.raises(KeypointFileError, match="missing arrays") as error:
        WholeBodyKeypoints.load(tmp_path / "partial.npz")
    assert "partial.npz" in str(error.value)
    arrays = {k: v for k, v in np.load(_saved(tmp_path)).items()}
    arrays["face"] = arrays["face"][:, :60]
    np.savez(tmp_path / "short_face.npz", **arrays)
    with pytest.raises(KeypointFileError, match="'face' has shape"):
        WholeBodyKeypoints.load(tmp_path / "short_face.npz")


def _saved(folder: Path) -> Path:
    random_keypoints(frames=2).save(folder / "good.npz")
    return folder / "good.npz"
