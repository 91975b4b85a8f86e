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
