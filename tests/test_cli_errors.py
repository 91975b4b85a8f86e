"""User mistakes on the command line end in one readable line and a non-zero exit, not a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command, expected",
    [
        (["scripts/generate.py", "--config", "config/infer_iasa.yaml", "sampler.num_step=3"], "sampler.num_step"),
        (["examples/IASA/train_iasa.py", "--config", "config/train_sparseattn_lora.yaml", "run.seeed=1"], "run.seeed"),
        (["examples/IASA/train_iasa.py", "--config", "config/absent.yaml"], "config/absent.yaml"),
    ],
)
def test_config_mistakes_are_one_line_errors(command: list[str], expected: str) -> None:
    completed = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().startswith("error:") and expected in completed.stderr


def test_unreadable_reference_image_is_a_one_line_error(tmp_path: Path) -> None:
    image = tmp_path / "person.png"
    image.write_text("not an image")
    command = ["scripts/generate.py", "--smoke", "audio=examples/audio/hello.wav", f"image={image}", f"out={tmp_path / 'out.mp4'}"]
    completed = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert f"reference image {image} could not be read" in completed.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_missing_dwpose_file_is_a_one_line_error_before_any_model_loads(tmp_path: Path) -> None:
    import imageio.v2 as imageio
    import numpy as np

    image = tmp_path / "person.png"
    imageio.imwrite(image, np.zeros((32, 32, 3), np.uint8))
    missing = tmp_path / "dwpose" / "yolox_l.onnx"
    command = [
        "scripts/generate.py", "--config", "config/infer_iasa.yaml", "audio=examples/audio/hello.wav", f"image={image}",
        f"out={tmp_path / 'out.mp4'}", f"detector.person_model={missing}",
    ]  # fmt: skip
    completed = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: DWPose model file {missing} not found") and "https://huggingface.co/yzd-v/DWPose" in last
    assert "load video model" not in completed.stdout
