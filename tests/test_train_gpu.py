"""The three training stages on a GPU in bf16 with the GPU sparse kernels (tiny model): what the CPU tests
cannot see (bf16 base with float32 LoRA under autocast, fused AdamW, flex / fast backward)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GPU_ENCODERS = ["model.model_size=tiny", "model.model_dir=null", "model.dtype=bfloat16", "model.device=cuda"]
GPU_MODEL = [*GPU_ENCODERS, "model.unianimate_checkpoint=null"]
RUN = ["run.mixed_precision=bf16", "run.report_to=none", "run.max_steps=2", "run.checkpoint_every=2"]


def backends() -> list[str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return ["flex"]
    return ["flex", "fast"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", backends())
def test_stages_run_in_bf16_on_the_gpu(make_dataset, tmp_path: Path, backend: str) -> None:
    from iasa.train.tasks import main

    dataset = make_dataset(tmp_path / "dataset")
    cache = tmp_path / "cache"
    main(["--config", "config/data_process.yaml", *GPU_ENCODERS, f"data.dataset_dir={dataset}", f"data.cache_dir={cache}",
          "data.height=32", "data.width=32", "data.num_frames=9"])  # fmt: skip
    stage = [*GPU_MODEL, f"cache_dir={cache}", f"attention.backend={backend}", *RUN]
    train = main(["--config", "config/train_sparseattn_lora.yaml", *stage, f"run.output_dir={tmp_path / 'train'}", "lora.rank=4", "lora.alpha=4"])
    lora = load_file(str(train / "lora.safetensors"))
    assert all(torch.isfinite(value).all() for value in lora.values())
    assert any(key.endswith("lora_B.weight") and value.abs().sum() > 0 for key, value in lora.items())
    distill = main(["--config", "config/distill_dmd.yaml", *stage, f"run.output_dir={tmp_path / 'distill'}",
                    f"teacher_lora={train / 'lora.safetensors'}", f"teacher_pose_guider={train / 'pose_guider.safetensors'}",
                    "critic_steps_per_generator_step=1", "generator_sigmas=[1.0,0.5]"])  # fmt: skip
    student = load_file(str(distill / "lora.safetensors"))
    assert all(torch.isfinite(value).all() for value in student.values())
    assert any(not torch.equal(student[key], lora[key]) for key in student)
