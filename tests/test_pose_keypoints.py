from pathlib import Path

import numpy as np
import pytest

from iasa.pose.keypoints import KeypointFileError, WholeBodyKeypoints

FIELDS = ("body", "body_score", "feet", "feet_score", "hands", "hands_score", "face", "face_score")


def random_keypoints(frames: int = 4, seed: int = 0, size: tuple[int, int] = (832, 480)) -> WholeBodyKeypoints:
    rng = np.random.default_rng(seed)
    return WholeBodyKeypoints(
        body=rng.random((frames, 18, 2), np.float32), body_score=rng.random((frames, 18), np.float32),
        hands=rng.random((frames, 2, 21, 2), np.float32), hands_score=rng.random((frames, 2, 21), np.float32),
        face=rng.random((frames, 68, 2), np.float32), face_score=rng.random((frames, 68), np.float32),
        feet=rng.random((frames, 6, 2), np.float32), feet_score=rng.random((frames, 6), np.float32),
        image_size=size,
    )  # fmt: skip


def assert_same(a: WholeBodyKeypoints, b: WholeBodyKeypoints) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.image_size == b.image_size


def test_file_round_trip_leaves_no_temporary(tmp_path: Path) -> None:
    keypoints = random_keypoints()
    keypoints.save(tmp_path / "clip_keypoints.npz")
    assert_same(WholeBodyKeypoints.load(tmp_path / "clip_keypoints.npz"), keypoints)
    assert [p.name for p in tmp_path.iterdir()] == ["clip_keypoints.npz"]


def test_old_files_without_feet_load_with_the_feet_missing(tmp_path: Path) -> None:
    keypoints = random_keypoints(frames=3)
    keypoints.save(tmp_path / "new.npz")
    arrays = dict(np.load(tmp_path / "new.npz"))
    assert arrays["feet"].shape == (3, 6, 2) and arrays["feet_score"].shape == (3, 6)
    np.savez(tmp_path / "old.npz", **{k: v for k, v in arrays.items() if not k.startswith("feet")})
    old = WholeBodyKeypoints.load(tmp_path / "old.npz")
    assert old.feet.shape == (3, 6, 2) and not old.feet_score.any()
    np.testing.assert_array_equal(old.body, keypoints.body)
    np.savez(tmp_path / "half.npz", **{k: v for k, v in arrays.items() if k != "feet_score"})
    with pytest.raises(KeypointFileError, match=r"missing arrays \['feet_score'\]"):
        WholeBodyKeypoints.load(tmp_path / "half.npz")


def test_dwpose_dicts_carry_unianimates_body_and_toes_and_round_trip() -> None:
    keypoints = random_keypoints(frames=3)
    keypoints.feet[0, :2] = [[0.2, 0.9], [0.4, 0.8]]  # left big toe, left small toe
    keypoints.feet_score[0] = [0.9, 0.5, 0.0, 0.9, 0.0, 0.9]  # right small toe missing
    frames = keypoints.to_dwpose_dicts()
    body = frames[0]["bodies"]
    assert body["candidate"].shape == (20, 2) and body["subset"].shape == (1, 20) and frames[0]["faces"].shape == (1, 68, 2)
    np.testing.assert_allclose(body["candidate"][18], [0.3, 0.85])  # left toes: the midpoint of the two toes
    assert body["subset"][0, 18] == 18 and body["subset"][0, 19] == -1  # right toes: one toe missing
    assert_same(WholeBodyKeypoints.from_dwpose_dicts(frames, (832, 480)), keypoints)


def test_dwpose_and_unianimate_dicts_without_feet_arrays() -> None:
    keypoints = random_keypoints(frames=1)
    frame = keypoints.to_dwpose_dicts()[0]
    bare = {"hands": frame["hands"], "faces": frame["faces"]}
    # DWPose's own dict: 18 body points, no feet.
    dwpose = dict(bare, bodies={"candidate": frame["bodies"]["candidate"][:18], "subset": np.arange(18.0)[None]})
    read = WholeBodyKeypoints.from_dwpose_dicts([dwpose], (832, 480))
    np.testing.assert_array_equal(read.body, keypoints.body)
    assert not read.feet_score.any()
    # UniAnimate's: 20 points; each toes point stands for both toes of its foot, the heels are missing.
    subset = np.array([list(range(18)) + [18, -1]], np.float32)
    unianimate = dict(bare, bodies={"candidate": frame["bodies"]["candidate"], "subset": subset})
    read = WholeBodyKeypoints.from_dwpose_dicts([unianimate], (832, 480))
    toes = keypoints.feet[0, :2].mean(axis=0)
    np.testing.assert_allclose(read.feet[0, :2], [toes, toes])
    np.testing.assert_array_equal(read.feet_score[0], [1, 1, 0, 0, 0, 0])
    with pytest.raises(KeypointFileError, match="frame 0"):
        WholeBodyKeypoints.from_dwpose_dicts([dict(bare, bodies={"candidate": np.zeros((19, 2)), "subset": np.zeros((1, 19))})], (8, 8))


def test_frame_selection_padding_and_crops_carry_every_field() -> None:
    from iasa.train.dataset import CropTransform
    from iasa.video.inference import crop_keypoints
    from iasa.video.pipeline import pad_keypoints

    keypoints = random_keypoints(frames=4, size=(64, 64))
    assert_same(keypoints.select_frames([0, 1, 2, 3]), keypoints)
    assert_same(keypoints.slice_frames(1, 3), keypoints.select_frames([1, 2]))
    assert_same(pad_keypoints(keypoints, 6).slice_frames(0, 4), keypoints)
    assert_same(pad_keypoints(keypoints, 6).slice_frames(5, 6), keypoints.slice_frames(3, 4))
    assert_same(crop_keypoints(keypoints, (64, 64), (64, 64)), keypoints)  # the identity crop
    # Half the width of a 64 x 128 image: x -> 2x - 0.5; points that leave lose their score, in every part.
    wide = random_keypoints(frames=2, size=(64, 128))
    for cropped in (crop_keypoints(wide, (64, 128), (64, 64)), CropTransform.centre((64, 128), 64, 64).keypoints(wide)):
        for part in ("body", "feet", "hands", "face"):
            points, scores = getattr(wide, part), getattr(wide, f"{part}_score")
            inside = (points[..., 0] >= 0.25) & (points[..., 0] <= 0.75)
            np.testing.assert_allclose(getattr(cropped, part)[inside][:, 0], 2 * points[inside][:, 0] - 0.5, atol=1e-5)
            np.testing.assert_array_equal(getattr(cropped, f"{part}_score"), np.where(inside, scores, 0), err_msg=part)


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
