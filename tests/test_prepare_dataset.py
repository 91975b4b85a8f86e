"""scripts/prepare_dataset.py cuts and crops a synthetic source video from a CSV in the reference format."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_dataset.py"
spec = importlib.util.spec_from_file_location("prepare_dataset", SCRIPT)
prepare_dataset = importlib.util.module_from_spec(spec)
sys.modules["prepare_dataset"] = prepare_dataset  # dataclasses look their module up while the script loads
spec.loader.exec_module(prepare_dataset)

FPS = 10
# Source: 3 s, 64 x 48; left half blue, right half red; the frame index is written into the green channel.
WIDTH, HEIGHT, SECONDS = 64, 48, 3


def make_source(path: Path) -> None:
    ffmpeg = prepare_dataset.ffmpeg_executable()
    silent = path.with_name("silent.mp4")
    writer = cv2.VideoWriter(str(silent), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for index in range(FPS * SECONDS):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)  # BGR
        frame[:, : WIDTH // 2, 0] = 255
        frame[:, WIDTH // 2 :, 2] = 255
        frame[:, :, 1] = index * 8
        writer.write(frame)
    writer.release()
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(silent), "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}",
                    "-c:v", "copy", "-c:a", "aac", "-shortest", str(path)], check=True)  # fmt: skip


def read_video(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return np.stack(frames)


def test_cuts_crops_and_extracts_audio(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    make_source(sources / "talk1.mp4")
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text(
        "video_link,video_name,start_time,end_time,x,y,width,height\n"
        "https://example.org/a,talk1,1.0,2.0,40,8,16,32\n"      # inside the red half
        "https://example.org/a,talk1,00:00.5,00:01.5,0,0,32,48\n"  # the blue half
        "https://example.org/b,missing,0,1,0,0,8,8\n"
    )  # fmt: skip
    output = tmp_path / "dataset"
    assert prepare_dataset.main(["--csv", str(csv_path), "--source_dir", str(sources), "--output_dir", str(output)]) == 1  # one missing

    red = read_video(output / "videos" / "talk1_00001000_00002000.mp4")
    assert red.shape[1:3] == (32, 16)
    assert abs(len(red) - FPS) <= 1
    assert red[..., 2].mean() > 200 and red[..., 0].mean() < 40
    # Green channel counts frames: the clip starts near source frame 10 (1.0 s).
    assert abs(float(red[0, ..., 1].mean()) / 8 - 10) < 1.5

    blue = read_video(output / "videos" / "talk1_00000500_00001500.mp4")
    assert blue.shape[1:3] == (48, 32) and blue[..., 0].mean() > 200 and blue[..., 2].mean() < 40

    audio = output / "audio" / "talk1_00001000_00002000.wav"
    import soundfile  # noqa: PLC0415  (librosa's reader)

    samples, rate = soundfile.read(str(audio))
    assert rate == 16000 and abs(len(samples) / rate - 1.0) < 0.1
    assert not list(output.rglob(".*partial*"))

    # A second run skips what exists.
    before = (output / "videos" / "talk1_00001000_00002000.mp4").stat().st_mtime_ns
    prepare_dataset.main(["--csv", str(csv_path), "--source_dir", str(sources), "--output_dir", str(output)])
    assert (output / "videos" / "talk1_00001000_00002000.mp4").stat().st_mtime_ns == before


def test_bad_csv_is_an_error_naming_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("video_name,start_time\nx,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        prepare_dataset.read_rows(path)
