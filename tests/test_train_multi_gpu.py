"""Training on two GPUs (NCCL): data-parallel, FSDP and DeepSpeed ZeRO-2 runs of the tiny model in bf16 take
the same optimiser steps. The CPU tests check these parallelisms for exact equality in float32 over gloo;
here bf16 kernels and NCCL's reduction order leave rounding differences, so the LoRA updates are compared
by direction and size (a process stepping on its own gradients alone points elsewhere)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iasa.train.tasks import main

ROOT = Path(__file__).resolve().parents[1]
GPU_ENCODERS = ["model.model_size=tiny", "model.model_dir=null", "model.dtype=bfloat16", "model.device=cuda"]
GPU_MODEL = [*GPU_ENCODERS, "model.unianimate_checkpoint=null"]
# What accelerate launch sets for each kind of accelerate config.
PARALLELISMS = {
    "data_parallel": {},
    "fsdp": {"ACCELERATE_USE_FSDP": "true"},
    "zero2": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
}


def launch_on_two_gpus(arguments: list[str], accelerate_environment: dict[str, str]) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ACCELERATE_")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "examples" / "IASA" / "train_iasa.py"), *arguments]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment | accelerate_environment
    )
    assert result.returncode == 0, result.stderr[-3000:]


def lora_update(output: Path) -> torch.Tensor:
    """All lora_B weights of the final LoRA as one vector: B starts at zero, so this is the update."""
    lora = load_file(str(output / "lora.safetensors"))
    return torch.cat([value.flatten().float() for key, value in sorted(lora.items()) if key.endswith("lora_B.weight")])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_data_parallel_fsdp_and_zero2_take_the_same_steps_on_two_gpus(make_dataset, tmp_path: Path) -> None:
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install -e .[dev] installs it)")
    dataset, cache = make_dataset(tmp_path / "dataset", clips=2), tmp_path / "cache"
    main(["--config", "config/data_process.yaml", *GPU_ENCODERS, f"data.dataset_dir={dataset}", f"data.cache_dir={cache}",
          "data.height=32", "data.width=32", "data.num_frames=9"])  # fmt: skip
    train = ["--config", "config/train_sparseattn_lora.yaml", *GPU_MODEL, f"cache_dir={cache}", "attention.backend=reference",
             "run.mixed_precision=bf16", "run.report_to=none", "run.max_steps=3", "run.checkpoint_every=3",
             "lora.rank=4", "lora.alpha=4"]  # fmt: skip
    updates = {}
    for name, accelerate_environment in PARALLELISMS.items():
        launch_on_two_gpus([*train, f"run.output_dir={tmp_path / name}"], accelerate_environment)
        updates[name] = lora_update(tmp_path / name)
        assert torch.isfinite(updates[name]).all() and updates[name].abs().sum() > 0, name
    reference = updates["data_parallel"]
    for name in ("fsdp", "zero2"):
        cosine = torch.nn.functional.cosine_similarity(updates[name], reference, dim=0).item()
        size_ratio = (updates[name].norm() / reference.norm()).item()
        assert cosine > 0.99 and 0.95 < size_ratio < 1.05, f"{name}: cosine {cosine:.4f}, size ratio {size_ratio:.4f}"
