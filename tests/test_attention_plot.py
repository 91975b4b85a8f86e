"""scripts/plot_mask.py: the plotted key tokens are those the dense mask allows, and a PNG is written."""

import importlib.util
from pathlib import Path

import cv2
import torch

from iasa.attention import SparseAttentionConfig, build_sparse_layout, dense_mask
from iasa.pose.synthetic_speaker import synthetic_speaker

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_mask.py"
spec = importlib.util.spec_from_file_location("plot_mask", SCRIPT)
plot_mask = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_mask)


def test_plotted_keys_are_the_union_of_the_query_frames_rows():
    layout = build_sparse_layout(synthetic_speaker(17, (64, 96), seed=0), SparseAttentionConfig(top_k=2))
    mask = dense_mask(layout)
    tokens = layout.tokens_per_frame
    for query_frame in (0, 4):
        rows = mask[query_frame * tokens : (query_frame + 1) * tokens]
        expected = rows.any(0).reshape(layout.num_frames, tokens)
        assert torch.equal(plot_mask.allowed_key_tokens(layout, query_frame, None), expected)
        face = layout.token_regions[query_frame] == 1
        expected_face = rows[face].any(0).reshape(layout.num_frames, tokens)
        assert torch.equal(plot_mask.allowed_key_tokens(layout, query_frame, 1), expected_face)


def test_png_from_a_keypoint_file(tmp_path):
    keypoints_path = tmp_path / "clip.npz"
    synthetic_speaker(9, (64, 64), seed=1).save(keypoints_path)
    out = tmp_path / "mask.png"
    plot_mask.main(["--keypoints", str(keypoints_path), "--out", str(out), "--query-region", "face", "top_k=1"])
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
    assert len(list(tmp_path.iterdir())) == 2  # no temporary file left behind


def test_bad_inputs_are_input_errors(tmp_path):
    import pytest

    from iasa.errors import InputError

    good = tmp_path / "clip.npz"
    synthetic_speaker(9, (64, 64), seed=1).save(good)
    synthetic_speaker(10, (64, 64), seed=1).save(tmp_path / "ten_frames.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    (tmp_path / "folder").mkdir()
    (tmp_path / "broken.yaml").write_text("top_k: [2\n")
    out = str(tmp_path / "mask.png")
    cases = [
        (["--keypoints", str(tmp_path / "absent.npz"), "--out", out], "does not exist"),
        (["--keypoints", str(tmp_path / "text.npz"), "--out", out], "is not a keypoint .npz"),
        (["--keypoints", str(tmp_path / "ten_frames.npz"), "--out", out], "ten_frames.npz: a clip of 10 video frames"),
        (["--keypoints", str(good), "--out", str(tmp_path / "folder")], "is a folder"),
        (["--keypoints", str(good), "--out", str(tmp_path / "mask.xyz")], "cannot write images of type .xyz"),
        (["--keypoints", str(good), "--out", out, "--config", str(tmp_path / "broken.yaml")], "not valid YAML"),
        (["--keypoints", str(good), "--out", out, "top_k=-2"], "bad value top_k=-2"),
    ]
    for argv, message in cases:
        with pytest.raises(InputError, match=message):
            plot_mask.main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml", "clip.npz", "folder", "ten_frames.npz", "text.npz"]


def test_the_command_line_prints_one_line_errors(tmp_path):
    import subprocess
    import sys

    (tmp_path / "text.npz").write_text("not a zip")
    command = [sys.executable, str(SCRIPT), "--keypoints", str(tmp_path / "text.npz"), "--out", str(tmp_path / "m.png")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [f"error: {tmp_path / 'text.npz'} is not a keypoint .npz (a zip of arrays, "
                                                     "as WholeBodyKeypoints.save and infer_motion.py write it): ValueError"]
