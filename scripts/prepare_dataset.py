"""Cut and crop training clips from local source videos listed in a CSV (the reference dataset's format).

    python scripts/prepare_dataset.py --csv clips.csv --source_dir sources/ --output_dir data/train [--size 512] [--fps 30] [--keypoints]
    python scripts/prepare_dataset.py --convert_keypoints data/train

CSV columns: video_link, video_name, start_time, end_time, x, y, width, height (times in seconds or
[HH:]MM:SS(.ms); the crop box in source pixels). The source of a row is <source_dir>/<video_name>.<ext>
(mp4, mkv, webm, mov); nothing is downloaded, video_link is only reported for missing sources.
Writes <output_dir>/videos/<clip>.mp4 (H.264) and, when the source has sound, audio/<clip>.wav (16 kHz
mono), clip = <video_name>_<start ms>_<end ms>. With --keypoints, DWPose (iasa.pose.detection, the two
ONNX files of https://huggingface.co/yzd-v/DWPose) finds the largest person's whole-body keypoints in
every frame of every clip and writes keypoints/<clip>.npz, which makes the folder a training set
(iasa/train/dataset.py). Finished clips and keypoint files are skipped; every file is written to a
temporary name and renamed. --convert_keypoints turns DWPose folders (.json frames, or DWPose's pickled
.npy frames, read without running code) into the same keypoints/<clip>.npz files.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.errors import InputError  # noqa: E402
from iasa.pose.config import DetectorConfig  # noqa: E402
from iasa.pose.detection import DWPoseDetector  # noqa: E402

COLUMNS = ("video_link", "video_name", "start_time", "end_time", "x", "y", "width", "height")
SOURCE_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov")
AUDIO_RATE = 16000


@dataclass(frozen=True)
class ClipRow:
    video_link: str
    video_name: str
    start: float
    end: float
    x: int
    y: int
    width: int
    height: int

    @property
    def clip_name(self) -> str:
        return f"{self.video_name}_{round(self.start * 1000):08d}_{round(self.end * 1000):08d}"


def parse_time(text: str) -> float:
    """Seconds from "12.5", "01:02.5" or "1:02:03"."""
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def read_rows(path: Path) -> list[ClipRow]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected {', '.join(COLUMNS)}")
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                row = ClipRow(
                    video_link=record["video_link"], video_name=record["video_name"].strip(),
                    start=parse_time(record["start_time"]), end=parse_time(record["end_time"]),
                    x=int(float(record["x"])), y=int(float(record["y"])),
                    width=int(float(record["width"])), height=int(float(record["height"])),
                )  # fmt: skip
            except ValueError as error:
                raise ValueError(f"{path} line {line}: {error}") from error
            if row.end <= row.start or row.width <= 0 or row.height <= 0:
                raise ValueError(f"{path} line {line}: empty time range or crop box")
            rows.append(row)
    return rows


def find_source(source_dir: Path, row: ClipRow) -> Path:
    for extension in SOURCE_EXTENSIONS:
        candidate = source_dir / f"{row.video_name}{extension}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no source video for '{row.video_name}' in {source_dir} (looked for {', '.join(SOURCE_EXTENSIONS)}); "
        f"download {row.video_link or 'it'} there yourself"
    )


def ffmpeg_executable() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise RuntimeError("imageio-ffmpeg is not installed: pip install imageio-ffmpeg") from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def has_audio(ffmpeg: str, source: Path) -> bool:
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(source)], capture_output=True, text=True)
    return "Audio:" in probe.stderr


def run_ffmpeg(ffmpeg: str, arguments: list[str], target: Path) -> None:
    """Run ffmpeg writing to a temporary file next to target, then rename it into place."""
    temporary = target.with_name(f".{target.stem}.partial{target.suffix}")
    result = subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *arguments, str(temporary)], capture_output=True, text=True)
    if result.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed writing {target}: {result.stderr.strip()[-500:]}")
    os.replace(temporary, target)


def cut_clip(ffmpeg: str, source: Path, row: ClipRow, output_dir: Path, size: int | None, fps: float | None) -> None:
    video = output_dir / "videos" / f"{row.clip_name}.mp4"
    audio = output_dir / "audio" / f"{row.clip_name}.wav"
    window = ["-ss", f"{row.start:.3f}", "-to", f"{row.end:.3f}", "-i", str(source)]
    if not video.is_file():
        filters = [f"crop={row.width}:{row.height}:{row.x}:{row.y}"]
        if size is not None:
            filters.append(f"scale={size}:{size}:flags=area")
        rate = ["-r", f"{fps}"] if fps else []
        encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "16", "-an"]
        run_ffmpeg(ffmpeg, [*window, "-vf", ",".join(filters), *rate, *encode], video)
    if not audio.is_file() and has_audio(ffmpeg, source):
        run_ffmpeg(ffmpeg, [*window, "-vn", "-ac", "1", "-ar", str(AUDIO_RATE), "-c:a", "pcm_s16le"], audio)


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video as RGB uint8 (H, W, 3), decoded as the training dataset decodes them (OpenCV)."""
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def write_keypoints(detector: DWPoseDetector, video: Path, target: Path) -> None:
    """DWPose keypoints of every frame of ``video`` saved to ``target`` (WholeBodyKeypoints .npz); warnings
    (frames with several people or none) are printed as one line."""
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    capture.release()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keypoints = detector.detect_frames(video_frames(video), total=total, origin=str(video))
    for warning in caught:
        tqdm.write(f"warning: {warning.message}", file=sys.stderr)
    keypoints.save(target)


def convert_keypoints(dataset_dir: Path) -> int:
    from iasa.train.dataset import convert_dwpose_folders

    written = convert_dwpose_folders(dataset_dir)
    print(f"wrote {len(written)} keypoint files: {', '.join(path.name for path in written) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, help="clip list in the reference format")
    parser.add_argument("--source_dir", type=Path, help="folder of <video_name>.<ext> source videos")
    parser.add_argument("--output_dir", type=Path, help="dataset folder to write videos/ and audio/ into")
    parser.add_argument("--size", type=int, default=None, help="resize every crop to size x size (default: keep)")
    parser.add_argument("--fps", type=float, default=None, help="resample to this frame rate (default: keep)")
    parser.add_argument("--keypoints", action="store_true", help="write keypoints/<clip>.npz of every clip with DWPose")
    defaults = DetectorConfig()
    parser.add_argument("--person_model", default=defaults.person_model, help="DWPose's yolox_l.onnx (with --keypoints)")
    parser.add_argument("--pose_model", default=defaults.pose_model, help="DWPose's dw-ll_ucoco_384.onnx (with --keypoints)")
    parser.add_argument("--providers", default=defaults.providers, help="onnxruntime providers: auto, cuda or cpu")
    parser.add_argument("--convert_keypoints", type=Path, metavar="DATASET_DIR",
                        help="instead of cutting clips: write keypoints/<clip>.npz for each DWPose folder of this dataset")  # fmt: skip
    args = parser.parse_args(argv)
    if args.convert_keypoints is not None:
        return convert_keypoints(args.convert_keypoints)
    if args.csv is None or args.source_dir is None or args.output_dir is None:
        parser.error("--csv, --source_dir and --output_dir are required to cut clips")

    detector = None
    if args.keypoints:  # before cutting anything: a missing model file fails at once
        config = DetectorConfig(person_model=args.person_model, pose_model=args.pose_model, providers=args.providers)
        detector = DWPoseDetector.from_config(config, setting="--")

    rows = read_rows(args.csv)
    (args.output_dir / "videos").mkdir(parents=True, exist_ok=True)
    (args.output_dir / "audio").mkdir(parents=True, exist_ok=True)
    ffmpeg = ffmpeg_executable()
    missing = []
    cut = []
    for row in tqdm(rows, desc="cutting clips"):
        try:
            source = find_source(args.source_dir, row)
        except FileNotFoundError as error:
            missing.append(str(error))
            continue
        cut_clip(ffmpeg, source, row, args.output_dir, args.size, args.fps)
        cut.append(row.clip_name)
    if detector is not None:
        (args.output_dir / "keypoints").mkdir(exist_ok=True)
        for name in tqdm(sorted(set(cut)), desc="keypoints", unit="clip"):
            target = args.output_dir / "keypoints" / f"{name}.npz"
            if not target.is_file():
                write_keypoints(detector, args.output_dir / "videos" / f"{name}.mp4", target)
    for message in missing:
        print(message, file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as error:  # bad user input: the message names the file or flag and the fix
        raise SystemExit(f"error: {error}") from None
