"""What several test modules share, as fixtures: tiny random networks, brute-force references of the sparse
attention rule, a tiny training dataset and its cache, and writers of tiny checkpoints in the official layouts.

Fixtures that hand out helpers return plain functions; the building blocks are module-level functions here
so that session-scoped fixtures (and hypothesis tests, which refuse function-scoped ones) can share them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread: on a busy shared CPU, extra threads mostly wait for each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ tiny Wan DiT
@functools.lru_cache(maxsize=1)
def random_tiny_dit():
    """One random tiny DiT (seed 0, float32, CPU); hand out copies, never this one."""
    from iasa.video.assembly import build_random
    from iasa.video.config import ARCHITECTURES

    torch.manual_seed(0)
    return build_random("dit", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_dit() -> Callable[[], torch.nn.Module]:
    """A factory of fresh copies of one random tiny DiT (building is slower than copying)."""
    return lambda: copy.deepcopy(random_tiny_dit())


# ------------------------------------------------------------------------------- the sparse attention rule
def brute_force_allowed_pairs(frame_selection: torch.Tensor, token_regions: torch.Tensor) -> torch.Tensor:
    """(L, L) bool, token by token from the rule's text: query and key in the same frame, or the key's frame
    chosen for the query's and both in the same non-background region."""
    selection, regions = frame_selection.tolist(), token_regions.tolist()  # Python values: fast to index
    frames, per_frame = len(regions), len(regions[0])
    total = frames * per_frame
    allowed = [[False] * total for _ in range(total)]
    for q in range(total):
        fq, iq = divmod(q, per_frame)
        for k in range(total):
            fk, ik = divmod(k, per_frame)
            region_link = selection[fq][fk] and regions[fq][iq] == regions[fk][ik] != 0
            allowed[q][k] = fq == fk or region_link
    return torch.tensor(allowed, dtype=torch.bool)


def brute_force_masked_attention(query, key, value, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax attention in float64 over the allowed (L, L) pairs; (..., L, D) in, float64 (..., L, D) out."""
    scores = (query.double() @ key.double().transpose(-1, -2)) / query.shape[-1] ** 0.5
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights @ value.double()


@pytest.fixture(scope="session")
def brute_force_allowed() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return brute_force_allowed_pairs


@pytest.fixture(scope="session")
def brute_force_attention() -> Callable[..., torch.Tensor]:
    return brute_force_masked_attention


# --------------------------------------------------------------------------------- tiny training data
SOURCE_SIZE = (48, 64)  # (height, width) of the synthetic source videos
SOURCE_FRAMES = 12
# The tiny random model on the CPU, as command-line overrides: of data_process (the encoders), and of the
# train and distill stages (no UniAnimate checkpoint, the reference kernel).
TINY_ENCODER_OVERRIDES = ("model.model_size=tiny", "model.model_dir=null", "model.dtype=float32", "model.device=cpu")
TINY_MODEL_OVERRIDES = (*TINY_ENCODER_OVERRIDES, "model.unianimate_checkpoint=null", "attention.backend=reference")


def write_dataset(root: Path, clips: int = 2) -> Path:
    """videos/clip<i>.mp4 (skeleton drawings of a synthetic speaker) and keypoints/clip<i>.npz."""
    from iasa.pose.drawing import draw_pose_frames
    from iasa.pose.synthetic_speaker import synthetic_speaker

    (root / "videos").mkdir(parents=True)
    (root / "keypoints").mkdir()
    for index in range(clips):
        keypoints = synthetic_speaker(num_frames=SOURCE_FRAMES, image_size=SOURCE_SIZE, seed=index)
        writer = cv2.VideoWriter(str(root / "videos" / f"clip{index}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, SOURCE_SIZE[::-1])
        for frame in draw_pose_frames(keypoints, "face"):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        keypoints.save(root / "keypoints" / f"clip{index}.npz")
    return root


def data_process_overrides(dataset: Path, cache: Path) -> list[str]:
    """data_process of the synthetic dataset with the tiny model: 9 frames at 32 x 32."""
    return [*TINY_ENCODER_OVERRIDES, f"data.dataset_dir={dataset}", f"data.cache_dir={cache}", "data.height=32",
            "data.width=32", "data.num_frames=9"]  # fmt: skip


def training_stage_overrides(cache: Path) -> list[str]:
    """The train and distill stages of the tiny model on a cache."""
    return [*TINY_MODEL_OVERRIDES, f"cache_dir={cache}"]


@pytest.fixture(scope="session")
def make_dataset() -> Callable[..., Path]:
    return write_dataset


@pytest.fixture(scope="session")
def tiny_overrides() -> Callable[[Path, Path], list[str]]:
    return data_process_overrides


@pytest.fixture(scope="session")
def stage_overrides() -> Callable[[Path], list[str]]:
    return training_stage_overrides


@pytest.fixture(scope="session")
def tiny_dataset_and_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two synthetic clips and their cache, written by the data_process task (read-only for the tests)."""
    from iasa.train.tasks import main

    root = tmp_path_factory.mktemp("tiny_training_data")
    dataset, cache = write_dataset(root / "dataset"), root / "cache"
    torch.manual_seed(0)  # the random encoders
    assert main(["--config", "config/data_process.yaml", *data_process_overrides(dataset, cache)]) == 2
    return dataset, cache


@pytest.fixture(scope="session")
def tiny_cache(tiny_dataset_and_cache: tuple[Path, Path]) -> Path:
    return tiny_dataset_and_cache[1]


# The tiny training and distillation runs that the data-parallel, FSDP and DeepSpeed tests (test_train_ddp.py,
# test_train_fsdp.py, test_train_deepspeed.py) compare with and resume: each run once for all of them.
TRAIN_SCRIPT = ROOT / "examples" / "IASA" / "train_iasa.py"
TINY_RUN = ("run.mixed_precision=fp32", "run.report_to=none", "run.max_steps=3", "run.checkpoint_every=2")
TINY_LORA = ("lora.rank=4", "lora.alpha=4")


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """A finished run of train_iasa.py (read-only for the tests): its command line without run.output_dir (the
    settings a test repeats for the runs it compares), its output folder and what it printed."""

    settings: list[str]
    output: Path
    stdout: str


def launch_data_parallel(arguments: list[str]) -> str:
    """train_iasa.py in two CPU processes under torchrun (gloo), plain data parallel: no accelerate FSDP or
    DeepSpeed settings in the environment (checked in what it prints); returns what it printed."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ACCELERATE_")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(TRAIN_SCRIPT), *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FSDP:" not in result.stdout and "DeepSpeed ZeRO-" not in result.stdout, result.stdout[-2000:]
    return result.stdout


@pytest.fixture(scope="session")
def data_parallel_training(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    """3 LoRA training steps on two processes, checkpoints at steps 2 and 3."""
    settings = ["--config", "config/train_sparseattn_lora.yaml", *training_stage_overrides(tiny_cache), *TINY_RUN, *TINY_LORA]
    output = tmp_path_factory.mktemp("data_parallel_training") / "run"
    return TrainingRun(settings, output, launch_data_parallel([*settings, f"run.output_dir={output}"]))


@pytest.fixture(scope="session")
def tiny_teacher(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a one-step LoRA training run in this process: the teacher of the distillation runs."""
    from iasa.train.tasks import main

    output = tmp_path_factory.mktemp("tiny_teacher") / "run"
    return main(["--config", "config/train_sparseattn_lora.yaml", *training_stage_overrides(tiny_cache), "run.mixed_precision=fp32",
                 "run.report_to=none", "run.max_steps=1", f"run.output_dir={output}", *TINY_LORA])  # fmt: skip


@pytest.fixture(scope="session")
def data_parallel_distillation(tiny_cache: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    """3 DMD steps (critic and generator in turn) from tiny_teacher on two processes, checkpoints at steps 2 and 3."""
    settings = ["--config", "config/distill_dmd.yaml", *training_stage_overrides(tiny_cache), *TINY_RUN,
                f"teacher_lora={tiny_teacher / 'lora.safetensors'}", f"teacher_pose_guider={tiny_teacher / 'pose_guider.safetensors'}",
                "critic_steps_per_generator_step=1", "generator_sigmas=[1.0,0.5]", "teacher_cfg_scale=2.0"]  # fmt: skip
    output = tmp_path_factory.mktemp("data_parallel_distillation") / "run"
    return TrainingRun(settings, output, launch_data_parallel([*settings, f"run.output_dir={output}"]))


def checkpoint_tensors(output: Path, step: int) -> dict[str, torch.Tensor]:
    """The trained tensors of a run's checkpoint at `step`."""
    from safetensors.torch import load_file

    return load_file(str(output / "checkpoints" / f"step-{step:08d}" / "trainable.safetensors"))


def assert_tensors_close(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    """Same names and shapes, values equal up to the order of float sums."""
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].shape == got[key].shape, key
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="session")
def weights() -> Callable[[Path, int], dict[str, torch.Tensor]]:
    return checkpoint_tensors


@pytest.fixture(scope="session")
def assert_close() -> Callable[[dict, dict], None]:
    return assert_tensors_close


# ---------------------------------------------------------------------------- tiny official checkpoints
def write_unianimate(path: Path, dit_lora: dict[str, torch.Tensor], pose_guider: torch.nn.Module) -> Path:
    """UniAnimate's Lightning checkpoint: a flat dict of the trainable weights, peft adapter "default", and
    the pose guider's two nets under their own key names."""
    state = {f"pipe.dit.{key.replace('.weight', '.default.weight')}": value for key, value in dit_lora.items()}
    state.update(pose_guider.state_dict())
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def write_unianimate_checkpoint() -> Callable[..., Path]:
    return write_unianimate


# The official EMAGE parts and their motion feature widths.
SMPLX_PART_DIMS = {"face": 106, "upper": 78, "hands": 180, "lower": 61, "global": 61}


def tiny_emage():
    """The official EMAGE window layout (64 frames, 4 seed frames) with a few channels everywhere."""
    from iasa.motion.emage_config import EmageAudioConfig, EmageConfig, EmageVQConfig

    audio = EmageAudioConfig(hidden_size=16, audio_f=8, motion_f=8, vae_codebook_size=8)
    parts = {part: EmageVQConfig(vae_test_dim=dims, vae_layer=1, vae_length=8, vae_codebook_size=8) for part, dims in SMPLX_PART_DIMS.items()}
    return EmageConfig(audio=audio, parts=parts)


def write_emage(folder: Path, config, seed: int = 0):
    """Random EMAGE networks saved like the Hugging Face repository H-Liu1997/emage_audio: config.json files
    with the extra keys transformers and the training config leave in them, and pytorch_model.bin files.
    Returns (audio model, motion decoder)."""
    from iasa.motion.emage_config import BODY_PARTS
    from iasa.motion.emage_model import EmageAudioModel
    from iasa.motion.emage_vq import EmageMotionDecoder

    torch.manual_seed(seed)
    audio_model, motion_decoder = EmageAudioModel(config.audio), EmageMotionDecoder(config)
    bookkeeping = {"architectures": ["EmageAudioModel"], "transformers_version": "4.46.3", "torch_dtype": "float32"}
    training_only = {"pose_rep": "smplx", "stride": 20, "test_length": 64, "joint_mask": None}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"model_type": "emage_audio", **bookkeeping, **training_only, **dataclasses.asdict(config.audio)})
    )
    torch.save(audio_model.state_dict(), folder / "pytorch_model.bin")
    for part in BODY_PARTS:
        part_folder = folder / "emage_vq" / part
        part_folder.mkdir(parents=True)
        vq = {"model_type": "emage_vqvaeconv", "vae_quantizer_lambda": 1.0, **dataclasses.asdict(config.parts[part])}
        (part_folder / "config.json").write_text(json.dumps(vq))
        torch.save(motion_decoder.parts[part].state_dict(), part_folder / "pytorch_model.bin")
    return audio_model, motion_decoder


@pytest.fixture(scope="session")
def tiny_emage_config() -> Callable[[], object]:
    return tiny_emage


@pytest.fixture(scope="session")
def write_emage_checkpoint() -> Callable[..., tuple]:
    return write_emage


# The SMPL-X 2020 model file (licence-gated, so tests write a synthetic one with the official keys and shapes).
NUM_VERTICES, NUM_FACES = 10475, 20908  # smplx hard-codes vertex ids of the extra joints: the count must match


def write_synthetic_smplx(folder: Path, seed: int = 0) -> Path:
    """A SMPL-X 2020 file with the official keys and shapes, zero blend shapes and a joint regressor that
    averages a block of vertices clustered (zero-mean) around each joint of the built-in skeleton, each
    vertex skinned to its joint only. Its joints are then the built-in skeleton's, posed by smplx's LBS."""
    from iasa.pose.skeleton import REST_JOINTS, SMPLX_PARENTS

    rng = np.random.default_rng(seed)
    owner = np.arange(NUM_VERTICES) % 55
    offsets = rng.normal(scale=0.01, size=(NUM_VERTICES, 3))
    for joint in range(55):
        offsets[owner == joint] -= offsets[owner == joint].mean(axis=0)
    regressor = np.zeros((55, NUM_VERTICES), np.float32)
    regressor[owner, np.arange(NUM_VERTICES)] = 1.0
    regressor /= regressor.sum(axis=1, keepdims=True)
    kintree = np.stack([SMPLX_PARENTS, np.arange(55)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # the official files store the root's parent as uint32 -1
    arrays = {
        "v_template": (REST_JOINTS[owner] + offsets).astype(np.float32),
        "f": rng.integers(0, NUM_VERTICES, size=(NUM_FACES, 3)).astype(np.uint32),
        "shapedirs": np.zeros((NUM_VERTICES, 3, 400), np.float32),
        "posedirs": np.zeros((NUM_VERTICES, 3, 486), np.float32),
        "J_regressor": regressor,
        "weights": np.eye(55, dtype=np.float32)[owner],
        "kintree_table": kintree,
        "hands_componentsl": np.eye(45, dtype=np.float32), "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": np.zeros(45, np.float32), "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": rng.integers(0, NUM_FACES, size=51).astype(np.int64),
        "lmk_bary_coords": rng.dirichlet(np.ones(3), size=51).astype(np.float32),
        "dynamic_lmk_faces_idx": rng.integers(0, NUM_FACES, size=(79, 17)).astype(np.int64),
        "dynamic_lmk_bary_coords": rng.dirichlet(np.ones(3), size=(79, 17)).astype(np.float32),
    }  # fmt: skip
    (folder / "smplx").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "smplx" / "SMPLX_NEUTRAL_2020.npz", **arrays)
    return folder


@pytest.fixture(scope="session")
def write_smplx_model() -> Callable[..., Path]:
    return write_synthetic_smplx


@pytest.fixture
def counted_compiled_blocks(monkeypatch):
    """A fresh compiled block function (Inductor: C++ kernels on the CPU) with fresh compile caches and counters;
    yields the list its compiled callable appends to on every call (one per block of a compiled chunk)."""
    from torch._dynamo.utils import counters

    from iasa.video import compiled_blocks

    torch.compiler.reset()
    counters.clear()
    function = compiled_blocks.compile_block_function()
    calls = []
    compiled = function.compiled
    monkeypatch.setattr(function, "compiled", lambda *args: calls.append(1) or compiled(*args))
    monkeypatch.setitem(compiled_blocks._COMPILED, "inductor", function)
    yield calls
    assert not function.failed, function.error
    torch.compiler.reset()


@pytest.fixture
def captured_stream(monkeypatch) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """(latents, frames): every chunk's latents that a stream decodes and every frame batch it writes, in order."""
    from iasa.video.stream_decode import StreamDecoder
    from iasa.video.video_io import StreamingVideoWriter

    latents: list[torch.Tensor] = []
    decode = StreamDecoder.decode
    monkeypatch.setattr(StreamDecoder, "decode", lambda self, chunk: (latents.append(chunk.clone()), decode(self, chunk))[1])
    written: list[np.ndarray] = []
    append = StreamingVideoWriter.append
    monkeypatch.setattr(StreamingVideoWriter, "append", lambda self, frames: (written.append(frames), append(self, frames)))
    return latents, written


def run_script_in_process(name: str, *args: object) -> object:
    """scripts/<name>'s main run in this process as `python scripts/<name> ARGS` would run it (sys.argv and sys.path
    as the interpreter sets them, Dynamo's caches empty as in a fresh process); returns what main returns. For tests
    of what a script does, not of its process: a fresh interpreter spends ~9 s importing torch and the project,
    which this process has done. sys.argv, sys.path and what the script sets in os.environ are restored after."""
    path = ROOT / "scripts" / name
    argv = [str(arg) for arg in args]
    environment = dict(os.environ)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", [str(path), *argv])
        monkeypatch.setattr(sys, "path", [str(path.parent), *sys.path])
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, path.stem, module)
        torch.compiler.reset()
        try:
            spec.loader.exec_module(module)
            return module.main(argv) if inspect.signature(module.main).parameters else module.main()
        finally:
            torch.compiler.reset()
            for key in set(os.environ) - set(environment):
                del os.environ[key]
            os.environ.update(environment)


@pytest.fixture(scope="session")
def run_script() -> Callable[..., object]:
    return run_script_in_process


def smoke_overrides(script: str) -> list[str]:
    """The SMOKE_OVERRIDES of scripts/<script> (its --smoke run's tiny random model), read from the script itself."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SMOKE_OVERRIDES
