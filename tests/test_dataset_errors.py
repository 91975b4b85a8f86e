"""Bad and crafted dataset files: pickled keypoint frames never run code, one unreadable or corrupt video does not
stop the others, and implausible keypoints are named."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from crafted_files import CodeRunner
from iasa.pose.synthetic_speaker import synthetic_speaker
from iasa.pose.keypoints import KeypointFileError, WholeBodyKeypoints
from iasa.train.cache import list_cached
from iasa.train.dataset import (
    DatasetError,
    SkippedClipsError,
    convert_dwpose_folders,
    load_video_keypoints,
    video_frame_count,
)
from iasa.train.tasks import main

_SPEC = importlib.util.spec_from_file_location("prepare_dataset", Path(__file__).resolve().parents[1] / "scripts" / "prepare_dataset.py")
prepare_dataset = sys.modules.setdefault("prepare_dataset", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(prepare_dataset)
FIELDS = ("body", "body_score", "hands", "hands_score", "face", "face_score")


def write_video(path: Path, frames: int, size: tuple[int, int] = (48, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size[::-1])
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    writer.release()


def corrupt_middle(path: Path) -> None:
    data = path.read_bytes()
    third = len(data) // 3
    path.write_bytes(data[:third] + bytes(third) + data[2 * third :])


def dwpose_npy_folder(root: Path, name: str, keypoints: WholeBodyKeypoints) -> Path:
    """keypoints/<name>/ with one np.save'd (pickled) DWPose dict per frame, as DWPose writes them."""
    folder = root / "keypoints" / name
    folder.mkdir(parents=True)
    for index, frame in enumerate(keypoints.to_dwpose_dicts()):
        np.save(folder / f"{index:05d}.npy", np.array(frame, dtype=object), allow_pickle=True)
    return folder


def test_a_pickled_keypoint_frame_is_refused_with_the_convert_command(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = tmp_path / "keypoints" / "clip"
    folder.mkdir(parents=True)
    np.save(folder / "00000.npy", np.array({"bodies": CodeRunner(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError) as error:
        load_video_keypoints(tmp_path, "clip", (48, 64))
    assert str(folder / "00000.npy") in str(error.value)
    assert f"prepare_dataset.py --convert_keypoints {tmp_path}" in str(error.value)
    # The converter parses such frames without unpickling them: the crafted one is refused.
    write_video(tmp_path / "videos" / "clip.mp4", frames=1)
    with pytest.raises(DatasetError, match="refused global") as error:
        convert_dwpose_folders(tmp_path)
    assert str(folder / "00000.npy") in str(error.value)
    assert not marker.exists() and not (tmp_path / "keypoints" / "clip.npz").exists()


def test_dwpose_npy_frames_convert_to_the_npz_that_training_reads(tmp_path: Path) -> None:
    keypoints = synthetic_speaker(num_frames=3, image_size=(48, 64), seed=1)
    dwpose_npy_folder(tmp_path, "clip", keypoints)
    write_video(tmp_path / "videos" / "clip.mp4", frames=3)
    assert prepare_dataset.main(["--convert_keypoints", str(tmp_path)]) == 0
    assert sorted(path.name for path in (tmp_path / "keypoints").iterdir()) == ["clip", "clip.npz"]
    loaded = load_video_keypoints(tmp_path, "clip", (48, 64))
    assert loaded.image_size == (48, 64)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(loaded, name), getattr(keypoints, name), atol=1e-6)
    assert convert_dwpose_folders(tmp_path) == []  # done once


def test_a_video_corrupt_in_the_middle_is_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, frames=60)
    assert video_frame_count(path) == (60, (48, 64))
    corrupt_middle(path)
    with pytest.raises(DatasetError, match=r"is corrupt: decoding stopped at frame \d+ of the 60 its header lists"):
        video_frame_count(path)


def test_data_process_skips_unreadable_videos_and_caches_the_rest(tmp_path: Path, capsys, make_dataset, tiny_overrides) -> None:
    dataset = make_dataset(tmp_path / "dataset", clips=3)
    (dataset / "videos" / "clip1.mp4").write_bytes(b"not a video at all")
    good = dataset / "videos" / "clip2.mp4"
    write_video(good, frames=60, size=(48, 64))
    corrupt_middle(good)
    with pytest.raises(SkippedClipsError) as error:
        main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, tmp_path / "cache")])
    message = str(error.value)
    assert "skipped 2 of 3 videos" in message and "clip1 (cannot open video" in message and "clip2 (" in message
    assert "is corrupt" in message and "shorter than one training clip" not in message
    assert list_cached(tmp_path / "cache") == ["clip0_w000"]
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "skipping clip1: cannot open video" in printed and "skipping clip2:" in printed


def write_npz(path: Path, keypoints: WholeBodyKeypoints) -> None:
    np.savez(path, image_size=np.asarray(keypoints.image_size), **{name: getattr(keypoints, name) for name in FIELDS})


def test_pixel_coordinates_and_zero_confidences_are_named(tmp_path: Path) -> None:
    keypoints = synthetic_speaker(num_frames=2, image_size=(480, 640), seed=0)
    pixels = WholeBodyKeypoints(**{name: getattr(keypoints, name) for name in FIELDS}, image_size=keypoints.image_size)
    pixels.body = keypoints.body * np.array([640, 480], np.float32)
    write_npz(tmp_path / "pixels.npz", pixels)
    with pytest.raises(KeypointFileError, match="pixels.npz: confident keypoints reach coordinate .* look like pixels"):
        WholeBodyKeypoints.load(tmp_path / "pixels.npz")
    silent = WholeBodyKeypoints(**{name: getattr(keypoints, name) * (0 if name.endswith("score") else 1) for name in FIELDS},
                                image_size=keypoints.image_size)  # fmt: skip
    write_npz(tmp_path / "zero.npz", silent)
    with pytest.raises(KeypointFileError, match="zero.npz: every keypoint has confidence 0"):
        WholeBodyKeypoints.load(tmp_path / "zero.npz")
    # The same through a DWPose folder of .json frames.
    folder = tmp_path / "keypoints" / "clip"
    folder.mkdir(parents=True)
    for index, frame in enumerate(pixels.to_dwpose_dicts()):
        (folder / f"{index:05d}.json").write_text(json.dumps(frame, default=lambda array: array.tolist()))
    with pytest.raises(DatasetError, match="look like pixels") as error:
        load_video_keypoints(tmp_path, "clip", (480, 640))
    assert str(folder) in str(error.value)


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04 truncated zip", None])
def test_a_keypoint_file_that_is_not_an_npz_is_a_named_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "clip.npz"
    if content is None:  # a single .npy array under an .npz name
        with path.open("wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(KeypointFileError, match=f"{path} (is not a keypoint .npz|holds a single array)"):
        WholeBodyKeypoints.load(path)
