"""Every key of every config/*.yaml belongs to its task's schema, and the task's code reads every key of that
schema: a key that no code path of the task reads fails here.

Reads are recorded on the config itself: each dataclass of the loaded config is given a subclass that notes
every field read, and the task then runs for real on the tiny model with every optional branch switched on
(a UniAnimate checkpoint, LoRA and pose guider files, EMAGE, SMPL-X, cfg, LPIPS and face-identity models);
where a task has exclusive choices (generation's reference pose from a file or detected, its alignment, its clip
decoder), it runs once per variant and the reads of all variants count.
Saving the resolved config next to a run's outputs reads every field, and so does checking the values
(iasa.config.validate_config, which the entry points run again for configs built in code): those reads do not
count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from scipy.io import wavfile

import dwpose_models
import iasa.config
import iasa.train.runtime
import iasa.train.tasks
from iasa.config import load_config
from iasa.motion.procedural import ProceduralMotionGenerator
from iasa.pose import motion_to_keypoints
from iasa.pose.config import PoseConfig
from iasa.train.config import SCHEMAS
from iasa.train.tasks import read_task
from iasa.video.inference import InferenceConfig, run_inference
from iasa.video.stream_run import StreamInferenceConfig, run_stream
from iasa.video.pose_guider import PoseGuider
from iasa.video.config import ARCHITECTURES
from iasa.video.tae import TAE_ARCHITECTURES, TaeDecoder, save_tae_decoder

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
GENERATE = "generate"  # the task of a YAML without `task`: scripts/generate.py
STREAM = "stream"  # scripts/stream.py's `task`
SCHEMA_OF = {**SCHEMAS, GENERATE: InferenceConfig, STREAM: StreamInferenceConfig}

pytestmark = pytest.mark.usefixtures("one_thread")


class FieldReads:
    """The dotted names of the config fields read while recording (`track` hands out the recording config)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.recording = True
        self._classes: dict[tuple[type, str], type] = {}

    def track(self, config: Any, prefix: str = "") -> Any:
        """A copy of a config tree whose dataclasses note every field read (nested configs tracked too)."""
        tracked = type(config).__new__(self._tracked_class(type(config), prefix))
        for field in dataclasses.fields(config):
            value = object.__getattribute__(config, field.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = self.track(value, f"{prefix}{field.name}.")
            object.__setattr__(tracked, field.name, value)
        return tracked

    def _tracked_class(self, cls: type, prefix: str) -> type:
        if (cls, prefix) not in self._classes:
            names, reads = {field.name for field in dataclasses.fields(cls)}, self

            def __getattribute__(instance, name):
                if name in names and reads.recording:
                    reads.names.add(prefix + name)
                return object.__getattribute__(instance, name)

            self._classes[cls, prefix] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__})
        return self._classes[cls, prefix]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.recording = False
        try:
            yield
        finally:
            self.recording = True


def schema_keys(schema: type, prefix: str = "") -> set[str]:
    """Dotted names of a schema's leaf fields (a dict-valued field is one leaf)."""
    keys = set()
    for field in dataclasses.fields(schema):
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            keys |= schema_keys(type(default), f"{prefix}{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def yaml_keys(mapping: dict, schema_leaves: set[str], prefix: str = "") -> set[str]:
    """Dotted names of a YAML mapping's leaves, descending while the schema has fields below the name."""
    keys = set()
    for name, value in mapping.items():
        key = prefix + str(name)
        if isinstance(value, dict) and key not in schema_leaves:
            keys |= yaml_keys(value, schema_leaves, key + ".")
        else:
            keys.add(key)
    return keys


# ------------------------------------------------------------------------------------------ the inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, make_dataset, tiny_overrides, stage_overrides, write_unianimate_checkpoint,
           write_emage_checkpoint, tiny_emage_config, write_smplx_model, tiny_dit) -> dict[str, Path]:  # fmt: skip
    """Every file an optional branch of a task reads, for the tiny model."""
    from iasa.train.tasks import main

    root = tmp_path_factory.mktemp("config_keys")
    files = {"dataset": make_dataset(root / "dataset", clips=1), "cache": root / "cache"}
    main(["--config", "config/data_process.yaml", *tiny_overrides(files["dataset"], files["cache"])])
    teacher = main(["--config", "config/train_sparseattn_lora.yaml", *stage_overrides(files["cache"]), "run.max_steps=1",
                    "run.mixed_precision=fp32", "run.report_to=none", f"run.output_dir={root / 'teacher'}",
                    "lora.rank=2", "lora.alpha=2"])  # fmt: skip
    files["lora"], files["pose_guider"] = teacher / "lora.safetensors", teacher / "pose_guider.safetensors"

    adapter = LoraConfig(r=2, lora_alpha=2, target_modules=["q", "k", "v", "o", "ffn.0", "ffn.2"])
    dit_lora = get_peft_model_state_dict(inject_adapter_in_model(adapter, tiny_dit()))
    guider = PoseGuider(dit_dim=ARCHITECTURES["tiny"].dim)
    files["unianimate"] = write_unianimate_checkpoint(root / "unianimate.ckpt", dit_lora, guider)
    files["emage"] = root / "emage_audio"
    write_emage_checkpoint(files["emage"], tiny_emage_config())
    files["smplx"] = write_smplx_model(root / "body_models")

    class MeanAbsolute(torch.nn.Module):  # stands in for an exported LPIPS network
        def forward(self, image0: torch.Tensor, image1: torch.Tensor) -> torch.Tensor:
            return (image0 - image1).abs().mean(dim=(1, 2, 3))

    class MeanColour(torch.nn.Module):  # stands in for a face-identity network
        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return crops.mean(dim=(2, 3))

    files["lpips"], files["face_id"] = root / "lpips.pt", root / "face_id.pt"
    torch.jit.save(torch.jit.script(MeanAbsolute()), str(files["lpips"]))
    torch.jit.save(torch.jit.script(MeanColour()), str(files["face_id"]))

    time = np.arange(6400) / 16000
    files["audio"] = root / "speech.wav"
    wavfile.write(files["audio"], 16000, (0.3 * np.sin(2 * np.pi * 180 * time)).astype(np.float32))
    import imageio.v2 as imageio

    files["image"] = root / "person.png"
    imageio.imwrite(files["image"], np.random.default_rng(0).integers(0, 255, (40, 32, 3), dtype=np.uint8))
    reference = motion_to_keypoints(ProceduralMotionGenerator()(np.zeros(1600, np.float32)), PoseConfig(image_height=40, image_width=32))
    files["keypoints"] = root / "person_keypoints.npz"
    reference.slice_frames(0, 1).save(files["keypoints"])
    # What the tiny DWPose stand-ins find a person in (tests/dwpose_models.py), and a tiny TAE decoder.
    files["photo"] = root / "photo.png"
    dots = {0: (40, 30), 1: (30, 55), 2: (50, 70)}  # the points the pose stand-in finds, one per colour channel
    imageio.imwrite(files["photo"], dwpose_models.person_image((100, 80), dots, grey_box=(15, 15, 65, 95)))
    files["person_model"] = dwpose_models.rectangle_detector(root / "dwpose" / "yolox_l.onnx")
    files["pose_model"] = dwpose_models.channel_peak_pose_model(root / "dwpose" / "dw-ll_ucoco_384.onnx")
    files["tae"] = root / "taew2_1.safetensors"
    save_tae_decoder(TaeDecoder(TAE_ARCHITECTURES["tiny"]), files["tae"])
    files["root"] = root
    return files


def generate_variants(files: dict[str, Path]) -> list[list[str]]:
    """Generation's exclusive choices, each taken by one variant."""
    return [
        [f"image={files['image']}", f"reference_keypoints={files['keypoints']}", "pose.alignment=similarity", "speed.decoder=wan"],
        [f"image={files['photo']}", "reference_keypoints=null", "detect_reference_pose=true",
         f"detector.person_model={files['person_model']}", f"detector.pose_model={files['pose_model']}", "detector.providers=cpu",
         "pose.alignment=unianimate", "speed.decoder=tae", f"speed.tae_checkpoint={files['tae']}"],
    ]  # fmt: skip


def dry_run_overrides(task: str, files: dict[str, Path], output: Path) -> list[str]:
    """The tiny model on the CPU with every optional branch of the task on (generation: its variants add the
    exclusive choices)."""
    encoders = ["model.model_size=tiny", "model.model_dir=null", "model.dtype=float32", "model.device=cpu"]
    if task == "data_process":
        return [*encoders, f"data.dataset_dir={files['dataset']}", f"data.cache_dir={output / 'cache'}", "data.height=32",
                "data.width=32", "data.num_frames=9"]  # fmt: skip
    base = [*encoders, f"model.unianimate_checkpoint={files['unianimate']}", "attention.backend=reference"]
    if task in (GENERATE, STREAM):
        sampler = ["sampler.num_steps=1", "sampler.cfg_scale=2.0"] if task == GENERATE else ["streaming.chunk_latent_frames=2"]
        return [*base, f"model.lora_path={files['lora']}", f"model.pose_guider_path={files['pose_guider']}",
                f"audio={files['audio']}", f"out={output / 'video.mp4'}", f"emage_dir={files['emage']}",
                f"pose.smplx_dir={files['smplx']}",
                "pose.image_height=32", "pose.image_width=32", *sampler]  # fmt: skip
    run = [f"cache_dir={files['cache']}", f"run.output_dir={output / 'run'}", "run.max_steps=2", "run.mixed_precision=fp32",
           "run.report_to=none"]  # fmt: skip
    if task == "train":
        return [*base, *run, "lora.rank=2", "lora.alpha=2", f"lora.init_path={files['lora']}"]
    return [*base, *run, f"teacher_lora={files['lora']}", f"teacher_pose_guider={files['pose_guider']}",
            "critic_steps_per_generator_step=1", "generator_sigmas=[1.0,0.5]", "teacher_cfg_scale=2.0",
            "region.lpips_weight=1.0", f"region.lpips_path={files['lpips']}", "region.face_id_weight=1.0",
            f"region.face_id_path={files['face_id']}"]  # fmt: skip


def keys_read_by_a_dry_run(path: Path, task: str, files: dict[str, Path], output: Path, monkeypatch) -> set[str]:
    reads = FieldReads()
    saving = iasa.train.runtime.config_to_yaml

    def save_without_recording(config: Any) -> str:
        with reads.paused():
            return saving(config)

    monkeypatch.setattr(iasa.train.runtime, "config_to_yaml", save_without_recording)
    validate = iasa.config.validate_config

    def validate_without_recording(config: Any, prefix: str = "") -> None:
        with reads.paused():
            validate(config, prefix)

    for module in [module for name, module in sys.modules.items() if name == "iasa" or name.startswith("iasa.")]:
        if getattr(module, "validate_config", None) is validate:  # iasa.config and every module that imported it
            monkeypatch.setattr(module, "validate_config", validate_without_recording)
    overrides = dry_run_overrides(task, files, output)
    if task == GENERATE:
        for variant in generate_variants(files):
            run_inference(reads.track(load_config(InferenceConfig, path, [*overrides, *variant])), progress=False)
    elif task == STREAM:  # generation's variants: the first with EMAGE's motion of the whole speech, the second
        # with the live procedural motion and the preview page (which reads preview_port)
        for serve, variant in enumerate(generate_variants(files)):
            motion = ["live_motion=true", "emage_dir=null"] if serve else ["live_motion=false"]
            config = reads.track(load_config(StreamInferenceConfig, path, [*overrides, *variant, *motion, "preview_port=0"]))
            run_stream(config, serve=bool(serve), progress=False, on_url=lambda url: None, hold=lambda server: None)
    else:
        monkeypatch.setattr(iasa.train.tasks, "load_config", lambda *args: reads.track(load_config(*args)))
        iasa.train.tasks.main(["--config", str(path), *overrides])
    return reads.names


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_key_is_in_the_schema_and_read_by_the_task(path: Path, inputs, tmp_path: Path, monkeypatch) -> None:
    task = OmegaConf.load(path).get("task") or GENERATE
    if task not in (GENERATE, STREAM):
        assert read_task(str(path), []) == task  # `task` itself is read from the file, before the schema is chosen
    schema = SCHEMA_OF[task]
    load_config(schema, path)  # a key the schema does not know fails here, naming the key
    leaves = schema_keys(schema) - {"task"}
    in_yaml = yaml_keys(OmegaConf.to_container(OmegaConf.load(path)), leaves) - {"task"}
    assert in_yaml <= leaves, f"{path.name}: keys that are no leaf of {schema.__name__}: {sorted(in_yaml - leaves)}"
    read = keys_read_by_a_dry_run(path, task, inputs, tmp_path, monkeypatch)
    unread = leaves - read
    assert not unread, f"{schema.__name__} keys that no code path of the {task} task reads: {sorted(unread)}"


def test_an_unread_key_is_found(monkeypatch) -> None:
    """The recorder itself: a field nobody reads stays out of the reads, nested names are dotted."""

    @dataclasses.dataclass
    class Inner:
        used: int = 1
        unused: int = 2

    @dataclasses.dataclass
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)
        flag: bool = True

    reads = FieldReads()
    config = reads.track(Outer())
    assert config.inner.used == 1 and isinstance(config.inner, Inner)
    with reads.paused():
        assert config.flag
    assert reads.names == {"inner", "inner.used"}
    assert schema_keys(Outer) - reads.names == {"inner.unused", "flag"}
