"""Video files: write frames as H.264 mp4 with the speech muxed in, and probe a file (frames, audio).

Uses imageio with imageio-ffmpeg's bundled ffmpeg. Outputs go to a temporary file next to the target and
are renamed at the end, so an interrupted run never leaves a half-written video.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise RuntimeError("writing videos needs imageio-ffmpeg: pip install imageio-ffmpeg") from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def _write_frames(path: Path, frames: np.ndarray, fps: float) -> None:
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        str(path), format="FFMPEG", fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
        macro_block_size=1, ffmpeg_log_level="error",
    )  # fmt: skip
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: str | Path | None = None) -> None:
    """frames (F, H, W, 3) uint8 -> mp4 at `fps`; with `audio`, its first audio stream is muxed in (AAC)."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected frames (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as folder:
        silent = Path(folder) / "silent.mp4"
        _write_frames(silent, frames, fps)
        result = silent
        if audio is not None:
            result = Path(folder) / "with_audio.mp4"
            command = [
                _ffmpeg(), "-y", "-loglevel", "error", "-i", str(silent), "-i", str(audio),
                "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", str(result),
            ]  # fmt: skip
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                raise RuntimeError(f"muxing audio {audio} into {path} failed: {completed.stderr.strip()}")
        os.replace(result, path)


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int
    has_audio: bool


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count (decoded), frame rate, size and whether an audio stream exists."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    header = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    video = re.search(r"Stream #.*Video:.*?(\d{2,5})x(\d{2,5}).*?([\d.]+) fps", header)
    if video is None:
        raise ValueError(f"{path} has no video stream:\n{header}")
    return VideoInfo(
        frames=frames, fps=float(video.group(3)), width=int(video.group(1)), height=int(video.group(2)),
        has_audio=re.search(r"Stream #.*Audio:", header) is not None,
    )  # fmt: skip
