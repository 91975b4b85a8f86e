"""Data-parallel training: two CPU processes under torchrun (gloo), checkpointed per process and resumed
exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def launch(arguments: list[str]) -> None:
    command = [str(TORCHRUN), "--nproc_per_node", "2", str(ROOT / "examples" / "IASA" / "train_iasa.py"), *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed next to python")
def test_two_process_run_resumes_exactly(tiny_cache: Path, stage_overrides, tmp_path: Path) -> None:
    settings = [*stage_overrides(tiny_cache), "run.mixed_precision=fp32", "run.report_to=none", "run.max_steps=3",
                "run.checkpoint_every=2", "lora.rank=4", "lora.alpha=4"]  # fmt: skip
    straight = tmp_path / "straight"
    launch(["--config", "config/train_sparseattn_lora.yaml", *settings, f"run.output_dir={straight}"])
    step_two, step_three = (straight / "checkpoints" / name for name in ("step-00000002", "step-00000003"))
    assert sorted(p.name for p in step_two.glob("rng-*")) == ["rng-0.safetensors", "rng-1.safetensors"]

    # Interrupted after step 2: keep only that checkpoint and let both processes resume from it.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(step_two, resumed / "checkpoints" / step_two.name)
    launch(["--config", "config/train_sparseattn_lora.yaml", *settings, f"run.output_dir={resumed}"])
    expected = load_file(str(step_three / "trainable.safetensors"))
    got = load_file(str(resumed / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert any(not torch.equal(expected[key], load_file(str(step_two / "trainable.safetensors"))[key]) for key in expected)
