"""End to end on CPU with the tiny Wan preset: data_process -> train -> distill, resume, LoRA hand-off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iasa.train.cache import CacheError, cached_pose_style, list_cached, read_clip
from iasa.train.tasks import main
from iasa.video.assembly import load_wan_components
from iasa.video.config import VideoModelConfig
from iasa.video.lora import load_lora, lora_pose_style

pytestmark = pytest.mark.usefixtures("one_thread")


def run_overrides(output: Path, steps: int) -> list[str]:
    return [f"run.output_dir={output}", f"run.max_steps={steps}", "run.mixed_precision=fp32", "run.report_to=tensorboard",
            "run.checkpoint_every=2", "run.log_every=1"]  # fmt: skip


def test_data_process_caches_every_clip_and_resumes(tiny_dataset_and_cache: tuple[Path, Path], tiny_overrides) -> None:
    dataset, cache = tiny_dataset_and_cache
    assert list_cached(cache) == ["clip0_w000", "clip1_w000"]
    clip = read_clip(cache, "clip0_w000")
    # 9 frames at 32x32 -> 3 latent frames of 4x4 latent cells, 2x2 tokens.
    assert clip.latents.shape == (1, 16, 3, 4, 4)
    assert clip.y.shape == (1, 20, 3, 4, 4)
    assert clip.pose_video.shape == (1, 3, 9, 32, 32) and clip.pose_video.max() > 0
    assert set(clip.layouts) == {"both", "past"}
    past = clip.layouts["past"].frame_selection
    assert not torch.triu(past, diagonal=1).any(), "the student's layout must not look at future frames"
    assert clip.keypoints.num_frames == 9
    # A rerun finds everything cached and writes nothing.
    assert main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, cache)]) == 0
    # The pose images are in the style data_process.yaml asks for, and the cache says so.
    assert cached_pose_style(cache, list_cached(cache)) == "face"
    assert json.loads((cache / "clip0_w000" / "meta.json").read_text())["pose_channel_order"] == "bgr"
    with pytest.raises(CacheError, match="drawn in pose style 'face', data.pose_style asks 'unianimate'"):
        main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, cache), "data.pose_style=unianimate"])


def test_train_then_distill_write_loras_that_the_inference_loader_reads(tiny_cache: Path, stage_overrides, tmp_path: Path) -> None:
    model = stage_overrides(tiny_cache)
    train_dir = main(["--config", "config/train_sparseattn_lora.yaml", *model, *run_overrides(tmp_path / "train", 2),
                      "lora.rank=4", "lora.alpha=4"])  # fmt: skip
    trained = load_file(str(train_dir / "lora.safetensors"))
    assert any(key.endswith("lora_B.weight") and value.abs().sum() > 0 for key, value in trained.items()), "LoRA B never moved"
    assert (train_dir / "pose_guider.safetensors").is_file()
    assert list((train_dir / "checkpoints").glob("step-00000002/trainable.safetensors"))
    assert list(train_dir.rglob("events.out.tfevents*")), "no TensorBoard log"

    distill_dir = main(["--config", "config/distill_dmd.yaml", *model, *run_overrides(tmp_path / "distill", 2),
                        f"teacher_lora={train_dir / 'lora.safetensors'}", f"teacher_pose_guider={train_dir / 'pose_guider.safetensors'}",
                        "critic_steps_per_generator_step=2", "generator_sigmas=[1.0,0.5]", "teacher_cfg_scale=2.0"])  # fmt: skip
    student = load_file(str(distill_dir / "lora.safetensors"))
    assert student.keys() == trained.keys()
    # Both LoRA files record the cache's pose style, for inference to draw.
    assert lora_pose_style(train_dir / "lora.safetensors") == lora_pose_style(distill_dir / "lora.safetensors") == "face"
    assert any(not torch.equal(student[key], trained[key]) for key in student), "the generator did not move off the teacher"

    # The inference side's loader reads the student into a fresh tiny DiT, weight for weight.
    dit = load_wan_components(VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu"), parts=("dit",)).dit
    dit = load_lora(distill_dir / "lora.safetensors", dit)
    loaded = {name: p for name, p in dit.named_parameters() if ".lora_" in name}
    for key, value in student.items():
        module, part = key.split(".lora_")
        assert torch.equal(loaded[f"{module}.lora_{part.split('.')[0]}.default.weight"], value)


def _final_weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((output / "checkpoints").glob("step-*"))[-1] / "trainable.safetensors"))


@pytest.mark.parametrize("task", ["train", "distill"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tiny_cache: Path, stage_overrides, tmp_path: Path, task: str) -> None:
    model = stage_overrides(tiny_cache)
    if task == "train":
        config, extra = "config/train_sparseattn_lora.yaml", ["lora.rank=4", "lora.alpha=4", "optim.warmup_steps=2"]
    else:
        teacher = tmp_path / "teacher"
        main(["--config", "config/train_sparseattn_lora.yaml", *model, *run_overrides(teacher, 1), "lora.rank=4", "lora.alpha=4"])
        config = "config/distill_dmd.yaml"
        extra = [f"teacher_lora={teacher / 'lora.safetensors'}", "teacher_pose_guider=null", "critic_steps_per_generator_step=1",
                 "generator_sigmas=[1.0,0.5]", "teacher_cfg_scale=1.0"]  # fmt: skip
    main(["--config", config, *model, *run_overrides(tmp_path / "straight", 4), *extra])
    main(["--config", config, *model, *run_overrides(tmp_path / "resumed", 2), *extra])
    main(["--config", config, *model, *run_overrides(tmp_path / "resumed", 4), *extra])  # run.resume=auto
    straight, resumed = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The resumed run really continued (different from stopping at step 2).
    at_two = load_file(str(tmp_path / "resumed" / "checkpoints" / "step-00000002" / "trainable.safetensors"))
    assert any(not torch.equal(at_two[key], resumed[key]) for key in resumed)
