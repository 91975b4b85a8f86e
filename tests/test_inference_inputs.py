"""Inference inputs: reference images of any common pixel format become the right RGB, every input and output
path is checked before the video model loads, and the smoke run goes through the sparse attention."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

import iasa.video.attention_patch as attention_patch
import iasa.video.pipeline as pipeline
from iasa.config import load_config
from iasa.errors import InputError
from iasa.video.inference import ImageFileError, InferenceConfig, load_reference_image, run_inference
from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SIZE = (32, 48)  # (height, width) of the test images; loaded at their own size, so no resampling


def gradient(dtype, maximum: int, channels: int) -> np.ndarray:
    values = np.linspace(0, maximum, SIZE[0] * SIZE[1] * channels).reshape(*SIZE, channels)
    return np.round(values).astype(dtype)


def test_a_16_bit_grey_png_is_scaled_not_wrapped(tmp_path: Path) -> None:
    grey = gradient(np.uint16, 65535, 1)[..., 0]
    cv2.imwrite(str(tmp_path / "grey16.png"), grey)
    image, _ = load_reference_image(tmp_path / "grey16.png", SIZE)
    expected = np.round(grey / 257).astype(np.uint8)
    assert image.shape == (*SIZE, 3) and np.array_equal(image, np.repeat(expected[..., None], 3, axis=-1))


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path: Path) -> None:
    rgb = gradient(np.uint16, 65535, 3)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    image, _ = load_reference_image(tmp_path / "rgb16.png", SIZE)
    assert np.abs(image.astype(int) - rgb / 257).max() <= 1


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_composited_over_white(tmp_path: Path, mode: str) -> None:
    colour = gradient(np.uint8, 255, 1 if mode == "LA" else 3)
    alpha = np.tile(np.linspace(0, 255, SIZE[1]).round().astype(np.uint8), (SIZE[0], 1))[..., None]
    Image.fromarray(np.concatenate([colour, alpha], axis=-1), mode).save(tmp_path / "alpha.png")
    image, _ = load_reference_image(tmp_path / "alpha.png", SIZE)
    opacity = alpha / 255
    expected = np.round(np.broadcast_to(colour, (*SIZE, 3)) * opacity + 255 * (1 - opacity))
    assert np.array_equal(image, expected.astype(np.uint8))


def test_an_unusual_pixel_type_is_named(tmp_path: Path) -> None:
    Image.fromarray(np.ones(SIZE, np.float32), "F").save(tmp_path / "float.tiff")
    with pytest.raises(ImageFileError, match="float32 pixels"):
        load_reference_image(tmp_path / "float.tiff", SIZE)


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    time = np.arange(int(0.3 * 16000)) / 16000
    wavfile.write(tmp_path / "speech.wav", 16000, (0.3 * np.sin(2 * np.pi * 180 * time)).astype(np.float32))
    Image.fromarray(gradient(np.uint8, 255, 3)).save(tmp_path / "person.png")
    return {"audio": tmp_path / "speech.wav", "image": tmp_path / "person.png", "out": tmp_path / "out.mp4"}


def smoke_config(inputs: dict[str, Path], *extra: str) -> InferenceConfig:
    return load_config(InferenceConfig, None, [*smoke_overrides("generate.py"), *(f"{k}={v}" for k, v in inputs.items()), *extra])


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the video model was loaded before the inputs were checked")

    monkeypatch.setattr(pipeline.VideoGenerator, "from_config", refuse)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda paths: paths["image"].write_text("not an image"), "could not be read as an image"),
        (lambda paths: paths["image"].unlink(), "does not exist"),
        (lambda paths: paths["audio"].write_bytes(b"RIFF junk"), "cannot read"),
        (lambda paths: paths["out"].mkdir(), "is a folder"),
        (lambda paths: (paths["out"].parent / "blocked").write_text(""), "is a file"),
    ],
)
def test_inputs_and_output_are_checked_before_the_model_loads(inputs, no_model, change, message) -> None:
    change(inputs)
    if message == "is a file":
        inputs["out"] = inputs["out"].parent / "blocked" / "video.mp4"
    with pytest.raises(InputError, match=message):
        run_inference(smoke_config(inputs), progress=False)


@pytest.mark.parametrize(
    "override, message",
    [
        ("reference_keypoints={tmp}/absent.npz", "does not exist"),
        ("model.model_dir={tmp}/no_model", "does not exist"),
        ("model.unianimate_checkpoint={tmp}/absent.ckpt", "model.unianimate_checkpoint"),
        ("model.lora_path={tmp}/absent.safetensors", "model.lora_path"),
        ("emage_dir={tmp}/no_emage", "does not exist"),
    ],
)
def test_model_and_keypoint_files_are_checked_before_the_model_loads(inputs, no_model, override, message) -> None:
    with pytest.raises(InputError, match=message):
        run_inference(smoke_config(inputs, override.format(tmp=inputs["out"].parent)), progress=False)


def test_the_smoke_run_uses_the_sparse_attention(inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = attention_patch.sparse_attention

    def counted(query, key, value, layout, backend):
        calls.append((backend, layout.num_frames))
        return original(query, key, value, layout, backend)

    monkeypatch.setattr(attention_patch, "sparse_attention", counted)
    config = smoke_config(inputs, "sampler.num_steps=1")
    assert config.attention.attention == "iasa"
    run_inference(config, progress=False)
    assert inputs["out"].is_file()
    assert calls and {backend for backend, _ in calls} == {"reference"}
