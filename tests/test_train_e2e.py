"""End to end on CPU with the tiny Wan preset: data_process -> train -> distill, resume, LoRA hand-off.

Also the helpers other training tests import: a synthetic dataset of pose-skeleton videos with keypoints,
and the overrides that select the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import load_file

from iasa.pose.drawing import draw_pose_frames
from iasa.pose.synthetic_speaker import synthetic_speaker
from iasa.train.cache import CacheError, cached_pose_style, list_cached, read_window
from iasa.train.tasks import main
from iasa.video.assembly import load_wan_components
from iasa.video.config import VideoModelConfig
from iasa.video.lora import load_lora, lora_pose_style

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread: on a busy shared CPU, extra threads mostly wait for each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


SOURCE_SIZE = (48, 64)  # (height, width) of the synthetic source videos
SOURCE_FRAMES = 12


def make_dataset(root: Path, clips: int = 2) -> Path:
    """videos/clip<i>.mp4 (skeleton drawings of a synthetic speaker) and keypoints/clip<i>.npz."""
    (root / "videos").mkdir(parents=True)
    (root / "keypoints").mkdir()
    for index in range(clips):
        keypoints = synthetic_speaker(num_frames=SOURCE_FRAMES, image_size=SOURCE_SIZE, seed=index)
        writer = cv2.VideoWriter(str(root / "videos" / f"clip{index}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, SOURCE_SIZE[::-1])
        for frame in draw_pose_frames(keypoints, "face"):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        keypoints.save(root / "keypoints" / f"clip{index}.npz")
    return root


MODEL = ["model.model_size=tiny", "model.model_dir=null", "model.unianimate_checkpoint=null", "model.dtype=float32",
         "model.device=cpu", "attention.sparse.backend=reference"]  # fmt: skip


def tiny_overrides(dataset: Path, cache: Path) -> list[str]:
    """data_process of the synthetic dataset with the tiny model: 9 frames at 32 x 32."""
    return [*MODEL, f"data.dataset_dir={dataset}", f"data.cache_dir={cache}", "data.height=32", "data.width=32", "data.num_frames=9"]


def stage_overrides(cache: Path) -> list[str]:
    return [*MODEL, f"cache_dir={cache}"]


def run_overrides(output: Path, steps: int) -> list[str]:
    return [f"run.output_dir={output}", f"run.max_steps={steps}", "run.mixed_precision=fp32", "run.report_to=tensorboard",
            "run.checkpoint_every=2", "run.log_every=1"]  # fmt: skip


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    dataset = make_dataset(root / "dataset")
    cache = root / "cache"
    assert main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, cache)]) == 2
    return dataset, cache


def test_data_process_caches_every_window_and_resumes(cached: tuple[Path, Path]) -> None:
    dataset, cache = cached
    assert list_cached(cache) == ["clip0_w000", "clip1_w000"]
    window = read_window(cache, "clip0_w000")
    # 9 frames at 32x32 -> 3 latent frames of 4x4 latent cells, 2x2 tokens.
    assert window.latents.shape == (1, 16, 3, 4, 4)
    assert window.y.shape == (1, 20, 3, 4, 4)
    assert window.pose_video.shape == (1, 3, 9, 32, 32) and window.pose_video.max() > 0
    assert set(window.layouts) == {"both", "past"}
    past = window.layouts["past"].frame_selection
    assert not torch.triu(past, diagonal=1).any(), "the student's layout must not look at future frames"
    assert window.keypoints.num_frames == 9
    # A rerun finds everything cached and writes nothing.
    assert main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, cache)]) == 0
    # The pose images are in the style data_process.yaml asks for, and the cache says so.
    assert cached_pose_style(cache, list_cached(cache)) == "face"
    assert json.loads((cache / "clip0_w000" / "meta.json").read_text())["pose_channel_order"] == "bgr"
    with pytest.raises(CacheError, match="drawn in pose style 'face', data.pose_style asks 'unianimate'"):
        main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, cache), "data.pose_style=unianimate"])


def test_train_then_distill_write_loras_that_the_inference_loader_reads(cached: tuple[Path, Path], tmp_path: Path) -> None:
    dataset, cache = cached
    model = stage_overrides(cache)
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
def test_interrupted_and_resumed_run_equals_uninterrupted_run(cached: tuple[Path, Path], tmp_path: Path, task: str) -> None:
    dataset, cache = cached
    model = stage_overrides(cache)
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
