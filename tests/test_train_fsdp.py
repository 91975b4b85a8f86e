"""FSDP training (an FSDP accelerate config): two CPU processes under torchrun (gloo) with FSDP2 shards give
the data-parallel run's weights, write full checkpoints that resume exactly under either parallelism, and a
LoRA file the inference loader reads; the same for distillation, with its three adapters on one sharded DiT.
The data-parallel runs are conftest's data_parallel_training and data_parallel_distillation (the DDP and
DeepSpeed tests use them too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iasa.video.assembly import load_wan_components
from iasa.video.config import VideoModelConfig
from iasa.video.lora import load_lora
from tests.conftest import launch_data_parallel

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def launch(arguments: list[str], fsdp: bool) -> None:
    """Run train_iasa.py in two processes; checks that the run reports the parallelism asked for."""
    if not fsdp:
        launch_data_parallel(arguments)
        return
    # ACCELERATE_USE_FSDP is what accelerate launch sets for an FSDP accelerate config.
    environment = {**os.environ, "ACCELERATE_USE_FSDP": "true"}
    command = [str(TORCHRUN), "--nproc_per_node", "2", str(ROOT / "examples" / "IASA" / "train_iasa.py"), *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FSDP: DiT and pose guider sharded over 2 processes" in result.stdout, result.stdout[-2000:]


def resume_from_step_two(source: Path, output: Path, settings: list[str], fsdp: bool = True) -> None:
    """A run interrupted after step 2 (only that checkpoint of `source` kept), continued under FSDP or not."""
    (output / "checkpoints").mkdir(parents=True)
    shutil.copytree(source / "checkpoints" / "step-00000002", output / "checkpoints" / "step-00000002")
    launch([*settings, f"run.output_dir={output}"], fsdp=fsdp)


pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed next to python")


def test_fsdp_train_matches_data_parallel_and_resumes_exactly(data_parallel_training, weights, assert_close, tmp_path: Path) -> None:
    settings, data_parallel, sharded = data_parallel_training.settings, data_parallel_training.output, tmp_path / "sharded"
    launch([*settings, f"run.output_dir={sharded}"], fsdp=True)

    # Same seeds, windows and noise per process: FSDP's averaged gradients are data parallel's, up to the
    # order of float sums; checkpoints hold full tensors (shapes of the unsharded model).
    assert_close(weights(data_parallel, 2), weights(sharded, 2))
    assert_close(weights(data_parallel, 3), weights(sharded, 3))
    assert any(not torch.equal(weights(sharded, 2)[key], weights(sharded, 3)[key]) for key in weights(sharded, 3))

    # Interrupted after step 2: resume under FSDP from its own checkpoint (exact), and data parallel from it
    # (the same full-tensor files, so it continues the FSDP run).
    resume_from_step_two(sharded, tmp_path / "resumed", settings)
    resume_from_step_two(sharded, tmp_path / "data_parallel_resumed_from_fsdp", settings, fsdp=False)
    expected, got = weights(sharded, 3), weights(tmp_path / "resumed", 3)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert_close(weights(sharded, 3), weights(tmp_path / "data_parallel_resumed_from_fsdp", 3))

    # The final files hold the full trained tensors; the inference loader reads the LoRA weight for weight.
    final = weights(sharded, 3)
    guider = load_file(str(sharded / "pose_guider.safetensors"))
    assert guider.keys() and all(torch.equal(value, final[f"pose_guider.{key}"]) for key, value in guider.items())
    model = VideoModelConfig(
        model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu"
    )
    dit = load_lora(sharded / "lora.safetensors", load_wan_components(model, parts=("dit",)).dit)
    loaded = {name: parameter for name, parameter in dit.named_parameters() if ".lora_" in name}
    lora = load_file(str(sharded / "lora.safetensors"))
    assert lora.keys() == {key[len("lora.") :] for key in final if key.startswith("lora.")}
    for key, value in lora.items():
        module, part = key.split(".lora_")
        assert torch.equal(loaded[f"{module}.lora_{part.split('.')[0]}.default.weight"], value)
        assert torch.equal(value, final[f"lora.{key}"])


def test_fsdp_distill_matches_data_parallel_and_resumes_exactly(data_parallel_distillation, weights, assert_close, tmp_path: Path) -> None:
    """Distillation switches the trained adapter (critic, generator) between phases on the sharded DiT."""
    settings, data_parallel, sharded = data_parallel_distillation.settings, data_parallel_distillation.output, tmp_path / "sharded"
    launch([*settings, f"run.output_dir={sharded}"], fsdp=True)
    assert_close(weights(data_parallel, 3), weights(sharded, 3))
    final = weights(sharded, 3)
    assert any(
        key.startswith("generator.") and not torch.equal(value, weights(sharded, 2)[key])
        for key, value in final.items()
    )
    assert any(
        key.startswith("critic.") and not torch.equal(value, weights(sharded, 2)[key]) for key, value in final.items()
    )

    resume_from_step_two(sharded, tmp_path / "resumed", settings)
    resumed = weights(tmp_path / "resumed", 3)
    assert final.keys() == resumed.keys()
    assert all(torch.equal(final[key], resumed[key]) for key in final)
    student = load_file(str(sharded / "lora.safetensors"))
    assert student.keys() and all(torch.equal(value, final[f"generator.{key}"]) for key, value in student.items())
