"""scripts/prepare_dataset.py cuts and crops a synthetic source video from a CSV in the reference format and,
with --keypoints, writes DWPose keypoints of every frame (tiny official-layout stand-ins, tests/dwpose_models.py)."""

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


def test_keypoints_of_every_frame_make_a_training_set(tmp_path: Path) -> None:
    import dwpose_models
    from iasa.pose.keypoints import WholeBodyKeypoints

    # A talking "person" for the tiny DWPose stand-ins: a grey box whose red dot (COCO point 0, the nose)
    # moves right 2 px per frame.
    sources, width, height = tmp_path / "sources", 96, 128
    sources.mkdir()
    writer = cv2.VideoWriter(str(sources / "talk2.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    nose = [(30 + 2 * index, 40) for index in range(FPS * 2)]
    for x, y in nose:
        frame = dwpose_models.person_image((height, width), {0: (x, y), 1: (60, 70), 2: (45, 100)}, grey_box=(16, 16, 80, 120))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text(f"video_link,video_name,start_time,end_time,x,y,width,height\n,talk2,0,1,0,0,{width},{height}\n")
    models = tmp_path / "dwpose"
    person = dwpose_models.rectangle_detector(models / "yolox_l.onnx")
    pose = dwpose_models.channel_peak_pose_model(models / "dw-ll_ucoco_384.onnx")
    output = tmp_path / "dataset"
    arguments = ["--csv", str(csv_path), "--source_dir", str(sources), "--output_dir", str(output), "--keypoints",
                 "--person_model", str(person), "--pose_model", str(pose), "--providers", "cpu"]  # fmt: skip
    assert prepare_dataset.main(arguments) == 0

    clip = "talk2_00000000_00001000"
    frames = read_video(output / "videos" / f"{clip}.mp4")
    keypoints = WholeBodyKeypoints.load(output / "keypoints" / f"{clip}.npz")
    assert keypoints.num_frames == len(frames) and abs(len(frames) - FPS) <= 1
    assert keypoints.image_size == (height, width)
    # The nose follows the dot (H.264 smears colours by about a pixel).
    np.testing.assert_allclose(keypoints.body[:, 0] * [width, height], nose[: len(frames)], atol=2.0)
    assert (keypoints.body_score[:, 0] > 0.1).all()  # found in every frame (the codec dims the dot)
    assert not list(output.rglob(".*partial*")) and not list(output.rglob("*.tmp*"))
    from iasa.train.dataset import load_video_keypoints  # what training reads

    np.testing.assert_array_equal(load_video_keypoints(output, clip, (height, width)).body, keypoints.body)


def test_missing_dwpose_file_stops_before_any_clip_is_cut(tmp_path: Path) -> None:
    from iasa.pose.detection import DetectorFileError

    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("video_link,video_name,start_time,end_time,x,y,width,height\n,talk,0,1,0,0,8,8\n")
    missing = tmp_path / "dwpose" / "yolox_l.onnx"
    output = tmp_path / "dataset"
    with pytest.raises(DetectorFileError, match="--person_model"):
        prepare_dataset.main(["--csv", str(csv_path), "--source_dir", str(tmp_path), "--output_dir", str(output),
                              "--keypoints", "--person_model", str(missing)])  # fmt: skip
    assert not output.exists()
