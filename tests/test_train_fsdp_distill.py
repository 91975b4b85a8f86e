"""FSDP distillation: two CPU processes under torchrun (gloo) with the three adapters on one sharded DiT
give the data-parallel run's weights and resume exactly (helpers and fixture from test_train_fsdp)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from test_train_e2e import stage_overrides  # noqa: E402
from test_train_fsdp import TORCHRUN, assert_close, cache, launch, resume_from_step_two, weights  # noqa: E402, F401

from iasa.train.tasks import main  # noqa: E402

pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed next to python")


def test_fsdp_distill_matches_data_parallel_and_resumes_exactly(cache: Path, tmp_path: Path) -> None:
    """Distillation switches the trained adapter (critic, generator) between phases on the sharded DiT."""
    teacher = main(["--config", "config/train_sparseattn_lora.yaml", *stage_overrides(cache), "run.mixed_precision=fp32",
                    "run.report_to=none", "run.max_steps=1", f"run.output_dir={tmp_path / 'teacher'}", "lora.rank=4", "lora.alpha=4"])  # fmt: skip
    settings = ["--config", "config/distill_dmd.yaml", *stage_overrides(cache), "run.mixed_precision=fp32", "run.report_to=none",
                "run.max_steps=3", "run.checkpoint_every=2", f"teacher_lora={teacher / 'lora.safetensors'}",
                f"teacher_pose_guider={teacher / 'pose_guider.safetensors'}", "critic_steps_per_generator_step=1",
                "generator_sigmas=[1.0,0.5]", "teacher_cfg_scale=2.0"]  # fmt: skip
    data_parallel, sharded = tmp_path / "data_parallel", tmp_path / "sharded"
    launch([*settings, f"run.output_dir={data_parallel}"], fsdp=False)
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
