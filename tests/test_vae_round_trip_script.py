"""scripts/vae_round_trip.py on the shipped miniature VAE and a lossless 9-frame clip: one PSNR per frame, the
strip's top row is the clip itself and its bottom row the decoded frames whose PSNR was printed (checked with
numpy's own PSNR); a clip too short for --frames is a one-line error naming the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from iasa.synthetic.dataset import write_ffv1_mp4

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import vae_round_trip  # noqa: E402

SIZE = 32


def test_per_frame_psnr_and_the_strip_of_truth_over_decoded(tmp_path: Path, capsys) -> None:
    ramp = np.linspace(0, 200, SIZE)
    clip = np.stack([np.stack([np.add.outer(ramp, ramp * 0 + 6 * t)] * 3, -1) for t in range(9)]).astype(np.uint8)  # moving gradient
    video = tmp_path / "clip.mp4"
    write_ffv1_mp4(video, clip, 30)
    strip_path = tmp_path / "strip.png"
    code = vae_round_trip.main(["--model_dir", str(ROOT / "models" / "miniature"), "--video", str(video), "--frames", "9",
                                "--strip", str(strip_path)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    scores = [float(value) for line in printed.splitlines() if line.startswith("frames") for value in line.split(":")[1].split()]
    assert len(scores) == 9
    strip = np.asarray(Image.open(strip_path))
    shown = np.linspace(0, 8, vae_round_trip.STRIP_FRAMES).round().astype(int)
    assert strip.shape == (2 * SIZE, len(shown) * SIZE, 3)
    for column, index in enumerate(shown):
        truth = strip[:SIZE, column * SIZE : (column + 1) * SIZE]
        decoded = strip[SIZE:, column * SIZE : (column + 1) * SIZE]
        assert np.array_equal(truth, clip[index])
        mse = np.mean((decoded.astype(np.float64) - clip[index]) ** 2)
        assert abs(10 * np.log10(255**2 / mse) - scores[index]) < 0.051  # printed to one decimal
    mean = float(re.search(r"mean ([\d.]+) dB over 9 frames", printed).group(1))
    assert abs(mean - np.mean(scores)) < 0.06


def test_a_clip_shorter_than_frames_names_the_file(tmp_path: Path, capsys) -> None:
    video = tmp_path / "short.mp4"
    write_ffv1_mp4(video, np.zeros((5, SIZE, SIZE, 3), np.uint8), 30)
    assert vae_round_trip.main(["--model_dir", str(ROOT / "models" / "miniature"), "--video", str(video), "--frames", "9"]) == 2
    error = capsys.readouterr().err
    assert str(video) in error and "--frames 5" in error
