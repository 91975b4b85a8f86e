import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from iasa.motion.audio import AudioFileError, load_audio


def dominant_frequency(waveform: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / sample_rate)[spectrum.argmax()])


def test_16k_mono_wav_reads_back_exactly(tmp_path: Path) -> None:
    samples = (np.random.default_rng(0).uniform(-0.5, 0.5, 8000)).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", samples, 16000, subtype="FLOAT")
    waveform = load_audio(tmp_path / "a.wav")
    assert waveform.dtype == np.float32 and waveform.shape == (8000,)
    np.testing.assert_array_equal(waveform, samples)


def test_44k_stereo_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    time = np.arange(44100 * 2) / 44100
    left, right = 0.4 * np.sin(2 * np.pi * 440 * time), 0.2 * np.sin(2 * np.pi * 440 * time)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 44100)
    waveform = load_audio(tmp_path / "stereo.wav")
    assert waveform.shape == (32000,)
    assert dominant_frequency(waveform, 16000) == pytest.approx(440, abs=1.0)
    middle = waveform[8000:24000]
    assert np.abs(middle).max() == pytest.approx(0.3, abs=0.01)  # the mean of the two channels


@pytest.mark.parametrize(("extension", "codec"), [("m4a", "aac"), ("mp3", "libmp3lame"), ("ogg", "libvorbis"), ("flac", "flac")])
def test_compressed_formats_decode(tmp_path: Path, extension: str, codec: str) -> None:
    import imageio_ffmpeg

    time = np.arange(16000) / 16000
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 300 * time), 16000)
    encoded = tmp_path / f"tone.{extension}"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "tone.wav"), "-c:a", codec, str(encoded)],
        check=True,
    )  # fmt: skip
    waveform = load_audio(encoded)
    assert abs(len(waveform) - 16000) < 2048  # aac pads by up to a couple of frames
    assert dominant_frequency(waveform, 16000) == pytest.approx(300, abs=2.0)


def test_silence_is_valid(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "quiet.wav", np.zeros(1600), 16000)
    assert not load_audio(tmp_path / "quiet.wav").any()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"RIFF\x00\x00WAVEfmt garbage" * 20, "cannot read"), (b"", "is empty"), (b"hello, not audio\n", "cannot read")],
)
def test_unreadable_files_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError, match=message) as error:
        load_audio(path)
    assert str(path) in str(error.value)


def test_a_wav_without_samples_is_an_error(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "none.wav", np.zeros(0), 16000)
    with pytest.raises(AudioFileError, match="holds no samples"):
        load_audio(tmp_path / "none.wav")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="does not exist"):
        load_audio(tmp_path / "absent.wav")
