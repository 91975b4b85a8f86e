"""A miniature in miniature for CPU tests: a held-out split of the synthetic dataset and the stage folders of
scripts/run_miniature.sh (outputs/miniature/<stage>/) for the tiny model, written in their real formats."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from iasa.synthetic.dataset import SyntheticDatasetConfig, plan_split, write_clip, write_identity, write_manifest
from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.lora import inject_lora, save_lora
from iasa.video.pose_guider import PoseGuider
from test_video_loading import write_tiny_wan_folder

SIZE = 64
FRAMES = 9
TINY = ARCHITECTURES["tiny"]
# What every tiny variant runs with (the eval config's `inference`).
TINY_INFERENCE = [
    "model.model_size=tiny", "model.unianimate_checkpoint=null", "model.dtype=float32", "pose.style=face",
    f"pose.image_height={SIZE}", f"pose.image_width={SIZE}", "attention.backend=reference",
]  # fmt: skip


def write_held_out_split(dataset: Path, clips: int = 2) -> SyntheticDatasetConfig:
    """dataset/heldout/ as make_synthetic_dataset.py writes it, tiny (one person, FRAMES frames of SIZE px)."""
    config = SyntheticDatasetConfig(train_clips=0, heldout_clips=clips, identities_heldout=1, frames=FRAMES, size=SIZE)
    people, specs = plan_split(config, "heldout")
    split = dataset / "heldout"
    for person in people:
        write_identity(split, person, config)
    for spec in specs:
        write_clip(split, spec, config)
    write_manifest(split, "heldout", people, specs, config)
    return config


def write_pose_guider(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    guider = PoseGuider(dit_dim=TINY.dim, hidden_channels=TINY.pose_hidden_channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in guider.state_dict().items()}, str(path))


def write_lora(path: Path, seed: int) -> None:
    """A rank-2 LoRA of the tiny DiT with random (non-zero) A and B, so that it changes the output."""
    torch.manual_seed(seed)
    dit = inject_lora(build_random("dit", TINY, torch.device("cpu"), torch.float32), rank=2, alpha=4)
    with torch.no_grad():
        for name, parameter in dit.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_lora(path, dit, pose_style="face")


def write_stage_folders(runs: Path) -> None:
    """runs/teacher/{model/, pose_guider.safetensors} and runs/student/{lora,pose_guider}.safetensors."""
    write_tiny_wan_folder(runs / "teacher" / "model")
    write_pose_guider(runs / "teacher" / "pose_guider.safetensors", seed=1)
    write_lora(runs / "student" / "lora.safetensors", seed=2)
    write_pose_guider(runs / "student" / "pose_guider.safetensors", seed=3)


def tiny_eval_overrides(dataset: Path, runs: Path, out: Path) -> list[str]:
    """An eval config (key=value) of two variants on the tiny stage folders, on the CPU."""
    variants = (
        "[{name: teacher, stage: teacher, lora: false, overrides: [attention.attention=dense, sampler.num_steps=2, "
        "sampler.cfg_scale=2.0]}, {name: student, stage: student, overrides: [attention.attention=iasa, "
        "attention.sparse.direction=past, sampler.num_steps=1, sampler.cfg_scale=1.0]}]"
    )
    return [
        f"dataset={dataset}", f"runs={runs}", f"out={out / 'miniature.json'}", f"grid={out / 'grid.png'}",
        "device=cpu", "cpu_clips=1", "cpu_threads=1", "grid_frames=3", "student=student",
        f"inference=[{','.join(TINY_INFERENCE)}]", f"variants={variants}",
    ]  # fmt: skip
