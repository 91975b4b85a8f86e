"""DeepSpeed ZeRO training (a DeepSpeed accelerate config): CPU processes under torchrun (gloo) give the
data-parallel / single-process run's weights, write full-tensor checkpoints that resume exactly, and a LoRA
file the inference loader reads. The accelerate config's DeepSpeed settings this trainer cannot honour are
refused with the key to change (the cached tiny dataset, the checkpoint helpers and the data-parallel distillation
run, which the FSDP test compares with too, are conftest fixtures)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iasa.train.config import OptimConfig, RunConfig
from iasa.train.deepspeed_zero import DeepSpeedSetupError, zero_config
from iasa.train.runtime import make_accelerator
from iasa.train.state_file import load_state
from iasa.train.tasks import main
from iasa.video.assembly import load_wan_components
from iasa.video.config import VideoModelConfig
from iasa.video.lora import load_lora

ROOT = Path(__file__).resolve().parents[1]

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install -e .[dev] installs it)",
)
RUN = ["run.report_to=none", "run.max_steps=3", "run.checkpoint_every=2"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(arguments: list[str], processes: int, zero_stage: int) -> None:
    """train_iasa.py in `processes` processes under DeepSpeed ZeRO-`zero_stage`. Checks that the run reports the
    parallelism asked for."""
    # What accelerate launch --use_deepspeed --zero_stage N sets.
    deepspeed = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(zero_stage)}
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ACCELERATE_")} | deepspeed
    script = str(ROOT / "examples" / "IASA" / "train_iasa.py")
    if processes == 1:  # torchrun's environment for one process, without its agent's start-up time
        environment |= {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
        command = [sys.executable, script, *arguments]
    else:  # --standalone: a free port, other torchrun jobs may be running on this machine
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command = [*torchrun, script, *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"DeepSpeed ZeRO-{zero_stage}:" in result.stdout, result.stdout[-2000:]


def resume_from_step_two(source: Path, output: Path, settings: list[str], processes: int, zero_stage: int) -> None:
    """A run interrupted after step 2 (only that checkpoint of `source` kept), continued."""
    (output / "checkpoints").mkdir(parents=True)
    shutil.copytree(source / "checkpoints" / "step-00000002", output / "checkpoints" / "step-00000002")
    launch([*settings, f"run.output_dir={output}"], processes, zero_stage)


def assert_equal(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def assert_moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> None:
    assert any(key.startswith(prefix) and not torch.equal(before[key], value) for key, value in after.items()), prefix


def continue_in_this_process(source: Path, output: Path, settings: list[str]) -> None:
    """A run without DeepSpeed (no parallelism) continuing `source`'s step-2 checkpoint."""
    shutil.copytree(source / "checkpoints" / "step-00000002", output / "checkpoints" / "step-00000002")
    main([*settings, f"run.output_dir={output}"])


@needs_deepspeed
def test_zero2_train_on_one_process_matches_plain_run_and_resumes_exactly(
    tiny_cache: Path, stage_overrides, weights, assert_close, tmp_path: Path
) -> None:
    settings = ["--config", "config/train_sparseattn_lora.yaml", *stage_overrides(tiny_cache), *RUN, "run.mixed_precision=fp32",
                "run.gradient_accumulation_steps=2", "optim.warmup_steps=2", "lora.rank=4", "lora.alpha=4"]  # fmt: skip
    plain, zero = tmp_path / "plain", tmp_path / "zero"
    main([*settings, f"run.output_dir={plain}"])  # this process, no parallelism: the expectation
    launch([*settings, f"run.output_dir={zero}"], processes=1, zero_stage=2)
    final = weights(zero, 3)
    assert_close(weights(plain, 3), final)
    assert_moved(weights(zero, 2), final, "lora.")
    assert_moved(weights(zero, 2), final, "pose_guider.")
    # The checkpoint's AdamW moments are the plain run's, in torch's per-parameter layout.
    optimizers = [
        load_state(run / "checkpoints" / "step-00000003" / "optimizers.safetensors") for run in (plain, zero)
    ]
    moments = [
        {f"{index}.{key}": value for index, entry in o["optimizer"]["state"].items() for key, value in entry.items()}
        for o in optimizers
    ]
    assert_close(*moments)

    resume_from_step_two(zero, tmp_path / "resumed", settings, processes=1, zero_stage=2)
    assert_equal(final, weights(tmp_path / "resumed", 3))
    # Full-tensor checkpoints: ZeRO-1, and a run without DeepSpeed, continue it too.
    resume_from_step_two(zero, tmp_path / "zero1", settings, processes=1, zero_stage=1)
    assert_close(final, weights(tmp_path / "zero1", 3))
    continue_in_this_process(zero, tmp_path / "continued_without_deepspeed", settings)
    assert_close(final, weights(tmp_path / "continued_without_deepspeed", 3))

    # The final files hold the trained tensors; the inference loader reads the LoRA weight for weight.
    model = VideoModelConfig(
        model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu"
    )
    dit = load_lora(zero / "lora.safetensors", load_wan_components(model, parts=("dit",)).dit)
    loaded = {name: parameter for name, parameter in dit.named_parameters() if ".lora_" in name}
    lora = load_file(str(zero / "lora.safetensors"))
    assert lora.keys() == {key[len("lora.") :] for key in final if key.startswith("lora.")}
    for key, value in lora.items():
        module, part = key.split(".lora_")
        assert torch.equal(loaded[f"{module}.lora_{part.split('.')[0]}.default.weight"], value)
        assert torch.equal(value, final[f"lora.{key}"])
    guider = load_file(str(zero / "pose_guider.safetensors"))
    assert guider.keys() and all(torch.equal(value, final[f"pose_guider.{key}"]) for key, value in guider.items())


@needs_deepspeed
def test_zero2_distill_on_two_processes_matches_data_parallel_and_resumes_exactly(
    data_parallel_distillation, weights, assert_close, tmp_path: Path
) -> None:
    """Two engines (generator, critic) over one DiT, each partitioned over the processes; the phases switch which
    one trains."""
    settings, data_parallel, zero = data_parallel_distillation.settings, data_parallel_distillation.output, tmp_path / "zero"
    launch([*settings, f"run.output_dir={zero}"], processes=2, zero_stage=2)
    # Same windows and noise per process: ZeRO-2's reduce-scattered gradients and partitioned AdamW give data
    # parallel's weights, up to the order of float sums.
    final = weights(zero, 3)
    assert_close(weights(data_parallel, 3), final)
    assert_moved(weights(zero, 2), final, "generator.")
    assert_moved(weights(zero, 2), final, "critic.")

    resume_from_step_two(zero, tmp_path / "resumed", settings, processes=2, zero_stage=2)
    assert_equal(final, weights(tmp_path / "resumed", 3))
    student = load_file(str(zero / "lora.safetensors"))
    assert student.keys() and all(torch.equal(value, final[f"generator.{key}"]) for key, value in student.items())


def accelerate_deepspeed_config(stage: int, **changes) -> dict:
    """The DeepSpeed config accelerate builds for `accelerate launch --use_deepspeed --zero_stage <stage>`."""
    config = {
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "zero_optimization": {"stage": stage, "offload_optimizer": {"device": "none", "nvme_path": None},
                              "offload_param": {"device": "none", "nvme_path": None}},
        "gradient_clipping": "auto", "steps_per_print": float("inf"), "fp16": {"enabled": False}, "bf16": {"enabled": True},
    }  # fmt: skip
    config.update(changes)
    return config


def test_zero_config_takes_the_stage_and_sets_batch_accumulation_clipping_and_precision() -> None:
    run, optim = RunConfig(gradient_accumulation_steps=3), OptimConfig(max_grad_norm=0.5)
    config = zero_config(
        accelerate_deepspeed_config(2, zero_optimization={"stage": 2, "reduce_bucket_size": 1000}), run, optim, 4
    )
    assert config["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}
    assert (
        config["train_micro_batch_size_per_gpu"],
        config["gradient_accumulation_steps"],
        config["train_batch_size"],
    ) == (1, 3, 12)
    assert config["gradient_clipping"] == 0.5 and config["managed_gradient_accumulation"] is False
    # bf16 from accelerate's mixed precision would cast the trained tensors; autocast does it instead.
    assert config["bf16"] == {"enabled": False} and config["fp16"] == {"enabled": False}
    assert zero_config(accelerate_deepspeed_config(1), run, optim, 1)["zero_optimization"] == {"stage": 1}


def test_training_config_supersedes_accelerate_accumulation_and_clipping() -> None:
    """`accelerate config` writes gradient_accumulation_steps and gradient_clipping into the DeepSpeed section."""
    run, optim = RunConfig(gradient_accumulation_steps=2), OptimConfig(max_grad_norm=10.0)
    source = accelerate_deepspeed_config(2, gradient_accumulation_steps=1, gradient_clipping=1.0)
    with pytest.warns(UserWarning) as notes:
        config = zero_config(source, run, optim, 3)
    expected = {"gradient_accumulation_steps": 2, "gradient_clipping": 10.0, "train_batch_size": 6}
    assert {key: config[key] for key in expected} == expected
    assert {str(note.message).split("=")[0] for note in notes} == {
        "the accelerate/DeepSpeed config's gradient_accumulation_steps",
        "the accelerate/DeepSpeed config's gradient_clipping",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"zero_optimization": {"stage": 3}}, "FSDP"),
        ({"zero_optimization": {"stage": 0}}, "without --use_deepspeed"),
        ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, "offload_optimizer_device"),
        ({"train_micro_batch_size_per_gpu": 2}, "train_micro_batch_size_per_gpu"),
        ({"optimizer": {"type": "Adam"}}, "optim.*"),
    ],
)
def test_zero_config_refuses_what_this_trainer_cannot_honour(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("*", r"\*")):
        zero_config(
            accelerate_deepspeed_config(2, **changes), RunConfig(gradient_accumulation_steps=1), OptimConfig(), 2
        )


def test_deepspeed_without_a_launcher_is_a_one_line_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a launcher's RANK, DeepSpeed would look for MPI; without deepspeed, accelerate would fail later."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.delenv("RANK", raising=False)
    installed = importlib.util.find_spec("deepspeed") is not None
    with pytest.raises(
        DeepSpeedSetupError, match="accelerate launch --use_deepspeed" if installed else "not installed"
    ):
        make_accelerator(RunConfig())


GPU_ENCODERS = ["model.model_size=tiny", "model.model_dir=null", "model.dtype=bfloat16", "model.device=cuda"]
GPU_MODEL = [*GPU_ENCODERS, "model.unianimate_checkpoint=null"]


@pytest.mark.gpu
@needs_deepspeed
def test_zero2_train_and_distill_on_one_gpu(make_dataset, weights, tmp_path: Path) -> None:
    """bf16 base, float32 adapters under autocast, fused AdamW inside the ZeRO engines, on the GPU."""
    dataset, cache_dir = make_dataset(tmp_path / "dataset"), tmp_path / "cache"
    main(["--config", "config/data_process.yaml", *GPU_ENCODERS, f"data.dataset_dir={dataset}", f"data.cache_dir={cache_dir}",
          "data.height=32", "data.width=32", "data.num_frames=9"])  # fmt: skip
    stage = [*GPU_MODEL, f"cache_dir={cache_dir}", "attention.backend=flex", "run.mixed_precision=bf16", *RUN]
    train = tmp_path / "train"
    launch(
        [
            "--config",
            "config/train_sparseattn_lora.yaml",
            *stage,
            f"run.output_dir={train}",
            "lora.rank=4",
            "lora.alpha=4",
        ],
        1,
        2,
    )
    assert_moved(weights(train, 2), weights(train, 3), "lora.")
    lora = load_file(str(train / "lora.safetensors"))
    assert all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in lora.values())
    distill = tmp_path / "distill"
    launch(["--config", "config/distill_dmd.yaml", *stage, f"run.output_dir={distill}", f"teacher_lora={train / 'lora.safetensors'}",
            f"teacher_pose_guider={train / 'pose_guider.safetensors'}", "critic_steps_per_generator_step=1",
            "generator_sigmas=[1.0,0.5]"], 1, 2)  # fmt: skip
    student = load_file(str(distill / "lora.safetensors"))
    assert all(torch.isfinite(value).all() for value in student.values())
    assert any(not torch.equal(student[key], lora[key]) for key in student)
