"""The pickle-free reader of DWPose .npy frames against the frames these tests write (pickled as np.save does)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from crafted_files import CodeRunner
from iasa.pose.dwpose_npy import read_dwpose_npy
from iasa.pose.keypoints import KeypointFileError


def assert_same(read, expected) -> None:
    assert type(read) is type(expected)
    if isinstance(expected, dict):
        assert read.keys() == expected.keys()
        for key in expected:
            assert_same(read[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(read) == len(expected)
        for a, b in zip(read, expected):
            assert_same(a, b)
    elif isinstance(expected, np.ndarray):
        # The stored byte order may differ from the native one; the values may not.
        assert read.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=") and read.shape == expected.shape
        np.testing.assert_array_equal(read, expected)
    else:
        assert read == expected


@pytest.mark.parametrize("protocol", [3, 4, 5])  # np.save writes 3
def test_frames_read_back_as_written(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(0)
    frame = {
        "bodies": {"candidate": rng.random((18, 2)), "subset": np.arange(18, dtype=np.int64)[None] - 1.0},
        "hands": rng.random((2, 21, 2)).astype(np.float32),
        "faces": np.asfortranarray(rng.random((1, 68, 2))),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "scores": [np.float32(0.5), 3, -2**40, 1.5, None, True, "name", (1, 2)],
        "empty": np.zeros((0, 2)),
    }
    path = tmp_path / "frame.npy"
    with path.open("wb") as handle:  # np.save's layout, with the pickle protocol under test
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(frame, dtype=object), handle, protocol=protocol)
    assert_same(read_dwpose_npy(path), frame)  # what was written, without unpickling it


def test_a_crafted_frame_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "frame.npy"
    np.save(path, np.array({"bodies": CodeRunner(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(KeypointFileError, match="refused global .*system"):
        read_dwpose_npy(path)
    assert not marker.exists()


def test_plain_arrays_and_broken_files(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.arange(4.0))
    np.testing.assert_array_equal(read_dwpose_npy(tmp_path / "plain.npy"), np.arange(4.0))
    path = tmp_path / "cut.npy"
    np.save(path, np.array({"a": np.arange(100.0)}, dtype=object), allow_pickle=True)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(KeypointFileError, match="cut.npy"):
        read_dwpose_npy(path)
