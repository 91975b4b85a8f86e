"""StreamingVideoWriter: frames appended chunk by chunk decode back in order, the speech is muxed and cut or
padded to the video's length, and a failure at any point leaves the target untouched and no temporary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import pytest
from scipy.io import wavfile

from iasa.errors import MissingFileError
from iasa.video.video_io import StreamingVideoWriter, probe_video

SIZE = (48, 64)  # (height, width)
FPS = 24
SAMPLE_RATE = 16000
TONE_HZ = 440
TONE_AMPLITUDE = 0.5


def gradient_frames(count: int, start: int = 0) -> np.ndarray:
    """(count, 48, 64, 3) uint8: a smooth horizontal ramp whose brightness steps with the frame index, so
    frames are told apart and their order is visible after lossy coding."""
    ramp = np.linspace(0, 60, SIZE[1])[None, :, None]
    levels = 20 + 25 * np.arange(start, start + count)[:, None, None, None]
    frames = levels + ramp + np.array([0, 30, 60])
    return np.broadcast_to(frames, (count, *SIZE, 3)).clip(0, 255).astype(np.uint8)


def write_tone(path: Path, seconds: float) -> None:
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wavfile.write(path, SAMPLE_RATE, (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * time)).astype(np.float32))


def decoded_audio(video: Path) -> np.ndarray:
    """The audio stream of ``video`` as float32 mono samples at SAMPLE_RATE."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-vn",
        "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-",
    ]  # fmt: skip
    return np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, "<f4")


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_frames_appended_in_chunks_decode_back_in_order(tmp_path):
    target = tmp_path / "out" / "video.mp4"
    expected = gradient_frames(8)
    with StreamingVideoWriter(target, FPS, SIZE) as writer:
        for start, stop in ((0, 3), (3, 4), (4, 4), (4, 8)):  # chunks of 3, 1, 0 and 4 frames
            writer.append(expected[start:stop])
            assert not target.exists()  # nothing at the target before close
    decoded = np.stack(imageio.mimread(target))
    assert decoded.shape == expected.shape
    error = np.abs(decoded.astype(int) - expected.astype(int))
    assert error.mean() < 2 and error.max() < 12  # crf 10 4:2:0 on a smooth ramp
    info = probe_video(target)
    assert (info.frames, info.fps, info.height, info.width, info.has_audio) == (8, FPS, *SIZE, False)
    assert [p.name for p in target.parent.iterdir()] == ["video.mp4"]
    assert target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("speech_seconds", [1.0, 0.2])
def test_speech_is_muxed_and_cut_or_padded_to_the_video(tmp_path, speech_seconds):
    write_tone(tmp_path / "speech.wav", speech_seconds)
    target = tmp_path / "video.mp4"
    with StreamingVideoWriter(target, FPS, SIZE, audio=tmp_path / "speech.wav") as writer:
        for start in range(0, 12, 4):
            writer.append(gradient_frames(4, start))
    assert probe_video(target).has_audio and probe_video(target).frames == 12
    audio = decoded_audio(target)
    video_samples = 12 * SAMPLE_RATE // FPS  # 0.5 s
    assert abs(audio.size - video_samples) <= 32
    tone_rms = TONE_AMPLITUDE / np.sqrt(2)
    assert rms(audio[: int(0.15 * SAMPLE_RATE)]) == pytest.approx(tone_rms, rel=0.05)
    spectrum = np.abs(np.fft.rfft(audio[: int(0.15 * SAMPLE_RATE)]))
    assert np.fft.rfftfreq(int(0.15 * SAMPLE_RATE), 1 / SAMPLE_RATE)[spectrum.argmax()] == pytest.approx(TONE_HZ, abs=10)
    tail = audio[int(0.3 * SAMPLE_RATE) :]  # past the short speech's end: tone when cut, silence when padded
    assert rms(tail) == (pytest.approx(tone_rms, rel=0.05) if speech_seconds > 0.5 else pytest.approx(0, abs=1e-3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "video.mp4"]


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_an_interruption_midway_leaves_the_old_target_and_no_temporary(tmp_path, interruption):
    target = tmp_path / "video.mp4"
    target.write_bytes(b"previous video")
    write_tone(tmp_path / "speech.wav", 1.0)
    with pytest.raises(interruption):
        with StreamingVideoWriter(target, FPS, SIZE, audio=tmp_path / "speech.wav") as writer:
            writer.append(gradient_frames(5))
            assert len(list(tmp_path.iterdir())) == 3  # the encoder's temporary beside the target
            raise interruption("generator failed")
    assert target.read_bytes() == b"previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "video.mp4"]


def test_bad_frames_or_no_frames_write_nothing(tmp_path):
    target = tmp_path / "video.mp4"
    with pytest.raises(ValueError, match=r"\(n, 48, 64, 3\) uint8"):
        with StreamingVideoWriter(target, FPS, SIZE) as writer:
            writer.append(gradient_frames(2))
            writer.append(gradient_frames(2)[:, :, :32])
    with pytest.raises(ValueError, match="no frames were appended"):
        with StreamingVideoWriter(target, FPS, SIZE):
            pass
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_fail_before_anything_is_written(tmp_path):
    with pytest.raises(MissingFileError, match="missing.wav"):
        StreamingVideoWriter(tmp_path / "video.mp4", FPS, SIZE, audio=tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="even"):
        StreamingVideoWriter(tmp_path / "video.mp4", FPS, (47, 64))
    assert list(tmp_path.iterdir()) == []
