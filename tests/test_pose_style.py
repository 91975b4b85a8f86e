"""Which pose style a run draws: "auto" follows the loaded weights, explicit styles win with a warning, and
inference picks the style a LoRA file records by itself."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import numpy as np
import pytest
from scipy.io import wavfile

from iasa.pose.style import PoseStyleError, resolve_pose_style

WHITE = np.array([255, 255, 255], np.uint8)


def test_auto_follows_the_weights_and_falls_back_to_unianimates_checkpoint() -> None:
    assert resolve_pose_style("auto", None, "UniAnimate's checkpoint") == "unianimate"
    assert resolve_pose_style("auto", "face", "lora.safetensors") == "face"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing or unrecorded: no warning
        assert resolve_pose_style("face", None, "lora.safetensors") == "face"
        assert resolve_pose_style("face", "face", "lora.safetensors") == "face"


def test_an_explicit_style_unlike_the_weights_is_drawn_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="lora.safetensors was trained on 'face' pose images"):
        assert resolve_pose_style("unianimate", "face", "lora.safetensors") == "unianimate"
    with pytest.raises(PoseStyleError, match=r"data.pose_style must be one of \['unianimate', 'face', 'auto'\]"):
        resolve_pose_style("openpose", None, "x", key="data.pose_style")


@pytest.mark.parametrize(("recorded", "face_drawn"), [("face", True), ("unianimate", False)])
def test_inference_draws_the_style_its_lora_file_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: str, face_drawn: bool
) -> None:
    import torch

    from iasa.config import load_config
    from iasa.video import pipeline
    from iasa.video.assembly import build_random
    from iasa.video.config import ARCHITECTURES
    from iasa.video.inference import InferenceConfig, run_inference
    from iasa.video.lora import inject_lora, save_lora

    lora = tmp_path / "lora.safetensors"
    save_lora(lora, inject_lora(build_random("dit", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32), 2, 2), pose_style=recorded)
    wavfile.write(tmp_path / "speech.wav", 16000, np.zeros(8000, np.float32))
    imageio.imwrite(tmp_path / "person.png", np.zeros((64, 64, 3), np.uint8))
    seen = {}

    class CapturingGenerator:
        """Stands in for the video model: keeps the pose images it is given."""

        components = SimpleNamespace(device="cpu")

        @classmethod
        def from_config(cls, *args, **kwargs) -> "CapturingGenerator":
            return cls()

        def generate(self, image, pose_video, reference_pose, keypoints, sampler, progress=True) -> np.ndarray:
            seen.update(pose_video=pose_video, reference_pose=reference_pose)
            return np.zeros_like(pose_video)

    monkeypatch.setattr(pipeline, "VideoGenerator", CapturingGenerator)
    config = load_config(InferenceConfig, "config/infer_iasa.yaml", [
        f"audio={tmp_path / 'speech.wav'}", f"image={tmp_path / 'person.png'}", f"out={tmp_path / 'out.mp4'}",
        f"model.lora_path={lora}", "pose.image_height=64", "pose.image_width=64", "detect_reference_pose=false",
        "model.model_dir=null", "model.unianimate_checkpoint=null", "model.pose_guider_path=null",
    ])  # fmt: skip
    assert config.pose.style == "auto"
    run_inference(config, progress=False)
    # Face points are the only white pixels any style draws.
    for images in (seen["pose_video"], seen["reference_pose"]):
        assert (images == WHITE).all(axis=-1).any() == face_drawn


def test_inference_style_without_a_lora_is_unianimates_and_old_loras_warn(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from iasa.video.assembly import build_random
    from iasa.video.config import ARCHITECTURES, VideoModelConfig
    from iasa.video.inference import inference_pose_style
    from iasa.video.lora import inject_lora, save_lora

    unianimate = VideoModelConfig(unianimate_checkpoint="UniAnimate-Wan2.1-14B-Lora-12000.ckpt", lora_path=None)
    assert inference_pose_style("auto", unianimate) == "unianimate"
    with pytest.warns(UserWarning, match="UniAnimate-Wan2.1-14B-Lora-12000.ckpt was trained on 'unianimate'"):
        assert inference_pose_style("face", unianimate) == "face"
    # A LoRA file from before styles were recorded: the config decides, with a warning to set it.
    old = tmp_path / "old.safetensors"
    save_lora(old, inject_lora(build_random("dit", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32), 2, 2), pose_style="face")
    with safe_open(str(old), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(old), metadata={k: v for k, v in metadata.items() if not k.startswith("pose_")})
    with pytest.warns(UserWarning, match="records no pose style"):
        assert inference_pose_style("auto", VideoModelConfig(lora_path=str(old))) == "unianimate"
