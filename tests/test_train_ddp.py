"""Data-parallel training: two CPU processes under torchrun (gloo), checkpointed per process and resumed
exactly (the uninterrupted run is conftest's data_parallel_training, which the FSDP tests compare with too)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import launch_data_parallel

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed next to python")
def test_two_process_run_resumes_exactly(data_parallel_training, tmp_path: Path) -> None:
    straight = data_parallel_training.output
    step_two, step_three = (straight / "checkpoints" / name for name in ("step-00000002", "step-00000003"))
    assert sorted(p.name for p in step_two.glob("rng-*")) == ["rng-0.safetensors", "rng-1.safetensors"]

    # Interrupted after step 2: keep only that checkpoint and let both processes resume from it.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(step_two, resumed / "checkpoints" / step_two.name)
    launch_data_parallel([*data_parallel_training.settings, f"run.output_dir={resumed}"])
    expected = load_file(str(step_three / "trainable.safetensors"))
    got = load_file(str(resumed / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert any(not torch.equal(expected[key], load_file(str(step_two / "trainable.safetensors"))[key]) for key in expected)
