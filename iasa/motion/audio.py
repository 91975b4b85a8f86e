"""Reading speech audio as the mono 16 kHz float waveform that the motion models take."""

from __future__ import annotations

import subprocess
from pathlib import Path

import librosa
import numpy as np
import soundfile

from iasa.errors import InputError

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".ogg")


class AudioFileError(InputError, ValueError):
    """An audio file that cannot be read as sound."""


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """The waveform of ``path`` as float32 mono samples (N,) at ``sample_rate`` Hz.

    Channels are averaged. libsndfile reads wav/flac/ogg/mp3; anything else (m4a/aac) is decoded by the
    ffmpeg binary that ships with imageio-ffmpeg. Silence is valid; a file with no samples, or one that
    is not audio, raises AudioFileError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file {path} does not exist")
    if path.stat().st_size == 0:
        raise AudioFileError(f"audio file {path} is empty (0 bytes); replace it with a wav/mp3/flac/m4a/ogg recording")
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
        waveform = samples.mean(axis=1)
        if file_rate != sample_rate:
            waveform = librosa.resample(waveform, orig_sr=file_rate, target_sr=sample_rate, res_type="soxr_hq")
    except (soundfile.LibsndfileError, RuntimeError):
        waveform = _decode_with_ffmpeg(path, sample_rate)
    if waveform.size == 0:
        raise AudioFileError(f"audio file {path} holds no samples; give a recording of at least one frame")
    if not np.isfinite(waveform).all():
        raise AudioFileError(f"audio file {path} holds NaN or infinite samples; re-export it")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _decode_with_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    """Decode any format ffmpeg knows to float32 mono at ``sample_rate`` (ffmpeg resamples)."""
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
        "-vn", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sample_rate), "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise AudioFileError(
            f"cannot read {path} as audio ({reason[-1] if reason else 'ffmpeg failed'}); "
            f"expected a readable {'/'.join(ext[1:] for ext in AUDIO_EXTENSIONS)} file"
        )
    return np.frombuffer(result.stdout, dtype="<f4").copy()
