"""Every value is checked when a config is read, before any model loads, and the error names the full key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from iasa.config import ConfigError, load_config
from iasa.train.config import SCHEMAS
from iasa.train.tasks import main as train_main
from iasa.video.inference import InferenceConfig
from iasa.eval.miniature import MiniatureEvalConfig
from iasa.video.stream_run import StreamInferenceConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("**/*.yaml")))
def test_every_shipped_config_passes(path: Path) -> None:
    task = OmegaConf.load(path).get("task")
    schemas = {**SCHEMAS, "stream": StreamInferenceConfig, None: InferenceConfig}
    load_config(MiniatureEvalConfig if path.name == "eval.yaml" else schemas[task], path)


@pytest.mark.parametrize(
    "override, key",
    [
        ("sampler.num_steps=0", "sampler.num_steps"),
        ("sampler.cfg_scale=0.5", "sampler.cfg_scale"),
        ("sampler.shift=0", "sampler.shift"),
        ("attention.attention=sparse", "attention.attention"),
        ("attention.sparse.top_k=-1", "attention.sparse.top_k"),
        ("attention.sparse.direction=future", "attention.sparse.direction"),
        ("attention.backend=triton", "attention.backend"),
        ("attention.sparse.regions=[face,elbows]", "attention.sparse.regions"),
        ("attention.sparse.min_token_coverage=0", "attention.sparse.min_token_coverage"),
        ("speed.dit_precision=fp4", "speed.dit_precision"),
        ("speed.vae_memory_format=channels_last", "speed.vae_memory_format"),
        ("speed.vae_latent_frames_per_call=0", "speed.vae_latent_frames_per_call"),
        ("long_video.overlap_latent_frames=21", "long_video.overlap_latent_frames"),
        ("long_video.private_leading_latent_frames=5", "long_video.private_leading_latent_frames"),
        ("model.dtype=float8", "model.dtype"),
        ("model.model_size=7b", "model.model_size"),
        ("model.device=gpu", "model.device"),
        ("pose.image_height=100", "pose.image_height"),
        ("pose.align_body_points=[nose,tail]", "pose.align_body_points"),
    ],
)
def test_inference_values_are_checked_on_read(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"bad value {key}="):
        load_config(InferenceConfig, ROOT / "config" / "infer_iasa.yaml", [override])


def never_built(config):
    raise AssertionError("the model was built despite a bad config")


@pytest.mark.parametrize(
    "config, override, key",
    [
        ("data_process", "data.num_frames=80", "data.num_frames"),
        ("data_process", "data.height=500", "data.height"),
        ("data_process", "layout_directions=[both,sideways]", "layout_directions"),
        ("data_process", "data.max_clips_per_video=0", "data.max_clips_per_video"),
        ("data_process", "layout.top_k=-1", "layout.top_k"),
        ("data_process", "layout.regions=[face,elbows]", "layout.regions"),
        ("train", "run.mixed_precision=fp8", "run.mixed_precision"),
        ("train", "run.report_to=mlflow", "run.report_to"),
        ("train", "run.gradient_accumulation_steps=0", "run.gradient_accumulation_steps"),
        ("train", "lora.rank=0", "lora.rank"),
        ("train", "optim.betas=[0.9,1.5]", "optim.betas"),
        ("train", "flow.min_timestep_fraction=1.0", "flow.max_timestep_fraction"),
        ("train", "dropout.pose=1.5", "dropout.pose"),
        ("train", "attention_direction=sideways", "attention_direction"),
        ("train", "attention.backend=triton", "attention.backend"),
        ("distill", "generator_sigmas=[0.5,1.0]", "generator_sigmas"),
        ("distill", "teacher_lora=null", "teacher_lora"),
        ("distill", "region.region_weights.elbows=1.0", "region.region_weights"),
        ("distill", "region.lpips_weight=1.0", "region.lpips_path"),
        ("distill", "student_direction=future", "student_direction"),
        ("distill", "region.lpips_path=data/train_cache/lpips.pt", "region.lpips_path"),  # TorchScript from the data
        ("distill", "region.face_id_path=outputs/distill/arcface.pt", "region.face_id_path"),  # ... or a run folder
    ],
)
def test_training_values_are_checked_before_the_model_is_built(config: str, override: str, key: str) -> None:
    files = {"data_process": "data_process", "train": "train_sparseattn_lora", "distill": "distill_dmd"}
    with pytest.raises(ConfigError, match=f"bad value {key}="):
        train_main(["--config", f"config/{files[config]}.yaml", override], components_factory=never_built)


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("sampler:\n  num_steps: [4\n  cfg_scale: 1.0\n")
    with pytest.raises(ConfigError, match=rf"{path} line \d+, column \d+: not valid YAML"):
        load_config(InferenceConfig, path)
    path.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping of keys"):
        load_config(InferenceConfig, path)
    with pytest.raises(ConfigError, match="override 'sampler.num_steps=\\[4': its value is not valid YAML"):
        load_config(InferenceConfig, None, ["sampler.num_steps=[4"])


@pytest.mark.parametrize(
    "command",
    [
        ["scripts/generate.py", "--smoke", "audio=examples/audio/hello.wav", "image=x.png", "sampler.num_steps=0"],
        ["examples/IASA/train_iasa.py", "--config", "{broken}"],
        ["scripts/generate.py", "--config", "{broken}"],
    ],
)
def test_command_lines_print_one_line_errors(command: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: train\nrun: {max_steps: 3\n")
    command = [part.format(broken=broken) for part in command]
    completed = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
    assert ("sampler.num_steps=0" in lines[0]) or (str(broken) in lines[0] and "not valid YAML" in lines[0])
    assert "load video model" not in completed.stdout  # found before any model was built


def test_the_default_inference_config_uses_the_sparse_attention() -> None:
    """The shipped generation configs run the input-aware sparse attention (the dataclass default is dense)."""
    assert load_config(InferenceConfig, ROOT / "config" / "infer_iasa.yaml").attention.attention == "iasa"
    assert load_config(StreamInferenceConfig, ROOT / "config" / "stream_iasa.yaml").attention.attention == "iasa"


@pytest.mark.parametrize(
    "override, key",
    [
        ("preview_port=70000", "preview_port"),
        ("emage_dir=checkpoints/emage", "live_motion"),  # EMAGE makes the whole speech's motion first
    ],
)
def test_stream_values_are_checked_on_read(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"bad value {key}="):
        load_config(StreamInferenceConfig, ROOT / "config" / "stream_iasa.yaml", [override])
    emage = load_config(StreamInferenceConfig, ROOT / "config" / "stream_iasa.yaml", ["emage_dir=x", "live_motion=false"])
    assert emage.emage_dir == "x" and not emage.live_motion
