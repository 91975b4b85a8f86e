"""End to end on a tiny random model: speech + image -> mp4 with the right frame count and the audio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from scipy.io import wavfile

from iasa.motion.procedural import ProceduralMotionGenerator
from iasa.pose import motion_to_keypoints
from iasa.pose.config import PoseConfig
from iasa.video.config import AttentionPatchConfig, LongVideoConfig, SamplerConfig, VideoModelConfig
from iasa.video.inference import center_crop_box, crop_keypoints
from iasa.video.video_io import probe_video, write_video

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000


def write_speech(path: Path, seconds: float) -> np.ndarray:
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    waveform = (0.3 * np.sin(2 * np.pi * 180 * time) * (1 + np.sin(2 * np.pi * 3 * time))).astype(np.float32)
    wavfile.write(path, SAMPLE_RATE, waveform)
    return waveform


def test_generate_cli_writes_video_with_audio(tmp_path):
    waveform = write_speech(tmp_path / "speech.wav", seconds=0.6)
    expected_frames = ProceduralMotionGenerator()(waveform).num_frames
    image_size = (100, 80)  # not the video size: the image and its keypoints are cropped and resized
    imageio.imwrite(tmp_path / "person.png", np.random.default_rng(0).integers(0, 255, (*image_size, 3), dtype=np.uint8))
    reference = motion_to_keypoints(
        ProceduralMotionGenerator()(waveform[:SAMPLE_RATE // 10]),
        PoseConfig(image_height=image_size[0], image_width=image_size[1]),
    ).slice_frames(0, 1)
    reference.save(tmp_path / "person_keypoints.npz")
    out = tmp_path / "out" / "video.mp4"
    command = [
        sys.executable, str(ROOT / "scripts" / "generate.py"), "--config", str(ROOT / "config" / "infer_iasa.yaml"),
        "--smoke", "--no-progress", f"audio={tmp_path / 'speech.wav'}", f"image={tmp_path / 'person.png'}",
        f"out={out}", f"reference_keypoints={tmp_path / 'person_keypoints.npz'}", "attention.backend=reference",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "stage timings" in completed.stdout and "video generation" in completed.stdout
    info = probe_video(out)
    assert info.frames == expected_frames == 18
    assert (info.height, info.width) == (64, 64) and info.fps == 30 and info.has_audio
    assert sorted(p.name for p in out.parent.iterdir()) == ["video.mp4"]  # no temporary files left


def test_long_clip_is_generated_in_windows():
    from iasa.video.pipeline import VideoGenerator

    generator = VideoGenerator.from_config(
        VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu"),
        AttentionPatchConfig(attention="dense"),
        LongVideoConfig(window_latent_frames=5, overlap_latent_frames=2),
    )
    rng = np.random.default_rng(1)
    frames = 23  # pads to 25 = 7 latent frames -> windows [0, 5) and [2, 7)
    pose = rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)
    video = generator.generate(pose[0], pose, pose[0], None, SamplerConfig(num_steps=1, cfg_scale=1.0), progress=False)
    assert video.shape == (frames, 32, 32, 3) and video.dtype == np.uint8


def test_crop_box_and_keypoints_follow_the_same_crop():
    assert center_crop_box((100, 80), (64, 64)) == (10.0, 0.0, 80.0, 80.0)
    assert center_crop_box((60, 120), (32, 64)) == (0.0, 0.0, 60.0, 120.0)
    reference = motion_to_keypoints(ProceduralMotionGenerator()(np.zeros(SAMPLE_RATE // 10, np.float32)), PoseConfig(image_height=100, image_width=80))
    cropped = crop_keypoints(reference, (100, 80), (64, 64))
    inside = cropped.body_score[0] > 0
    # A point at pixel (x, y) of the 100 x 80 image sits at (x, y - 10) of the 80 x 80 crop.
    expected = (reference.body[0] * [80, 100] - [0, 10]) / 80
    np.testing.assert_allclose(cropped.body[0][inside], expected[inside], atol=1e-5)
    assert cropped.image_size == (64, 64)


def test_write_video_rejects_bad_frames_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "bad.mp4", np.zeros((3, 16, 16, 3), np.float32), fps=30)
    assert list(tmp_path.iterdir()) == []
