"""Video files: write frames as H.264 mp4 with the speech muxed in, and probe a file (frames, audio).

Frames are piped to imageio-ffmpeg's bundled ffmpeg as they come (StreamingVideoWriter; write_video is
the one-shot form). The encoder writes a temporary file next to the target; closing muxes the audio in
and renames, so an interrupted or failed run never leaves a half-written video.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from iasa.atomic_io import atomic_output, temporary_prefix
from iasa.errors import MissingFileError

# H.264 in 4:2:0 YUV plays in every browser and player; crf 10 is visually lossless (the value imageio's
# quality=8 gave, which this module used before it piped frames itself).
H264_CRF = 10


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise RuntimeError("writing videos needs imageio-ffmpeg: pip install imageio-ffmpeg") from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def _mux_audio(video: Path, audio: Path, result: Path, seconds: float) -> None:
    """Copy the video stream of `video` and the first audio stream of `audio` (as AAC) into `result`; the
    audio is cut to, or padded with silence up to, `seconds` (the video's length), so both streams end
    together whatever the speech's length."""
    command = [
        _ffmpeg(), "-nostdin", "-y", "-loglevel", "error", "-i", str(video), "-i", str(audio),
        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-af", "apad", "-t", f"{seconds:.6f}",
        str(result),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"muxing audio {audio} into {result} failed: {completed.stderr.strip()}")


class StreamingVideoWriter:
    """Frames (n, H, W, 3) uint8 RGB appended as they come -> an H.264 mp4 at ``path``, audio muxed in.

    ``size`` is (height, width), both even (4:2:0 chroma halves them). Each ``append`` pipes its frames to
    an ffmpeg encoder writing a temporary file beside ``path``; ``close`` finishes the encoder, muxes
    ``audio`` (cut or padded to the video's length) and renames onto ``path``; ``abort`` (what leaving the
    ``with`` block by an exception, KeyboardInterrupt included, calls) kills the encoder and removes the
    temporary, so ``path`` is either the complete video or untouched. One thread writes.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], audio: str | Path | None = None):
        self.path = Path(path)
        self.fps = fps
        self.height, self.width = size
        self.audio = None if audio is None else Path(audio)
        self.frames_written = 0
        if self.height <= 0 or self.width <= 0 or self.height % 2 or self.width % 2:
            raise ValueError(f"video size (height, width) must be positive and even for H.264 4:2:0, got {size}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if self.audio is not None and not self.audio.is_file():
            raise MissingFileError(f"audio {self.audio} to mux into {self.path} does not exist; check the audio= path")
        ffmpeg = _ffmpeg()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(suffix=".mp4", dir=self.path.parent, prefix=temporary_prefix(self.path))
        os.close(descriptor)
        self._silent = Path(name)
        self._log = tempfile.TemporaryFile()  # ffmpeg's stderr: a file, because an unread pipe can fill and stall it
        command = [
            ffmpeg, "-nostdin", "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-r", str(Fraction(fps).limit_denominator()), "-i", "-",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(H264_CRF), str(self._silent),
        ]  # fmt: skip
        # A session of its own: Ctrl-C reaches Python, which kills the encoder in abort(), not ffmpeg first.
        self._encoder: subprocess.Popen | None = None
        try:
            self._encoder = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
            )
        except BaseException:
            self.abort()
            raise

    def append(self, frames: np.ndarray) -> None:
        """Encode frames (n, H, W, 3) uint8 RGB, n >= 0; blocks only while the encoder's pipe is full."""
        if self._encoder is None:
            raise RuntimeError(f"the writer of {self.path} is closed")
        expected = (self.height, self.width, 3)
        if frames.ndim != 4 or frames.shape[1:] != expected or frames.dtype != np.uint8:
            raise ValueError(f"expected frames (n, {', '.join(map(str, expected))}) uint8, got {frames.shape} {frames.dtype}")
        try:
            self._encoder.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:
            raise RuntimeError(f"ffmpeg stopped while encoding {self.path}: {self._encoder_log()}") from None
        self.frames_written += len(frames)

    def close(self) -> None:
        """Finish the encoder, mux the audio and rename onto ``path``; on any failure, ``abort``."""
        if self._encoder is None:
            return
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were appended, so no video is written to {self.path}")
            with contextlib.suppress(BrokenPipeError):  # ffmpeg died: its exit status and log say why
                self._encoder.stdin.close()
            if self._encoder.wait() != 0:
                raise RuntimeError(f"ffmpeg failed encoding {self.path}: {self._encoder_log()}")
            self._encoder = None
            with atomic_output(self.path) as result:
                if self.audio is None:
                    os.replace(self._silent, result)
                else:
                    _mux_audio(self._silent, self.audio, result, seconds=self.frames_written / self.fps)
        except BaseException:
            self.abort()
            raise
        self._silent.unlink(missing_ok=True)
        self._log.close()

    def abort(self) -> None:
        """Stop without writing ``path``: kill the encoder, remove the temporary."""
        if self._encoder is not None:
            self._encoder.kill()
            self._encoder.wait()
            with contextlib.suppress(BrokenPipeError):  # frames still buffered for the killed encoder
                self._encoder.stdin.close()
            self._encoder = None
        self._silent.unlink(missing_ok=True)
        self._log.close()

    def _encoder_log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-1000:] or "no message"

    def __enter__(self) -> StreamingVideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: str | Path | None = None) -> None:
    """frames (F, H, W, 3) uint8 -> mp4 at `fps`; with `audio`, its first audio stream is muxed in (AAC),
    cut or padded to the video's length."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected frames (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    with StreamingVideoWriter(path, fps, frames.shape[1:3], audio) as writer:
        writer.append(frames)


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
