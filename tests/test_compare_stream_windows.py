"""scripts/compare_stream_windows.py on the tiny model: a held-out synthetic clip regenerated longer than it was
written, streamed and made as the overlapping-window video, both scored against the rendered ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.model_size=tiny", "model.model_dir=null", "model.unianimate_checkpoint=null", "model.lora_path=null",
    "model.pose_guider_path=null", "model.device=cpu", "model.dtype=float32", "pose.image_height=64",
    "pose.image_width=64", "attention.backend=reference", "speed.decoder=wan",
    # past the (tiny) trained length, with a bounded cache: the long-stream path
    "streaming.trained_latent_frames=5", "streaming.cache_frames=2", "streaming.chunk_latent_frames=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    command = [
        sys.executable, str(ROOT / "scripts/make_synthetic_dataset.py"), "--out", str(root), "--train_clips", "0",
        "--heldout_clips", "1", "--identities_heldout", "1", "--size", "64", "--frames", "9", "--workers", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "heldout"


def arguments(split: Path, out: Path, clip: str) -> list[str]:
    return [
        "--config", str(ROOT / "config/stream_iasa.yaml"), "--split-dir", str(split), "--clip", clip, "--seconds", "1.0",
        "--drift-seconds", "0.3", "--window-latent-frames", "5", "--overlap-latent-frames", "2", "--no-progress",
        "--out", str(out), *TINY,
    ]  # fmt: skip


def test_stream_and_windows_are_scored_against_the_ground_truth(split, tmp_path, run_script):
    clip = next(iter(json.loads((split / "manifest.json").read_text())["clips"]))
    run_script("compare_stream_windows.py", *arguments(split, tmp_path / "compare.json", clip))
    results = json.loads((tmp_path / "compare.json").read_text())
    assert results["frames"] == 33 and results["clip"] == clip  # 1 s at 30 fps, padded to 4n + 1: longer than written
    for variant in ("stream", "windows"):
        scores = results[variant]
        assert 0 < scores["psnr"] < 60  # random weights: far from the truth, but a real number
        assert scores["drift_db"] == pytest.approx(scores["psnr_first"] - scores["psnr_last"])
    assert results["stream"]["psnr"] != results["windows"]["psnr"]  # two different generations


def test_an_unknown_clip_is_named(split, tmp_path):
    """On the command line: the one-line error of the script's process."""
    command = [sys.executable, str(ROOT / "scripts/compare_stream_windows.py"), *arguments(split, tmp_path / "compare.json", "nobody_0000")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode != 0 and "lists no clip 'nobody_0000'" in done.stderr
