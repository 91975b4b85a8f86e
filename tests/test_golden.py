"""Golden values: a few output numbers of the tiny models, pinned, so that a numerical change fails here
instead of passing on shapes (as diffusers' pipeline tests pin an output slice).

Every case builds its tiny random networks from a seed and feeds them seeded random inputs (no drawn pose
images, no synthetic speaker: those have their own tests), then compares a fingerprint of each output (eight
evenly spaced values, the mean and the mean absolute value) with the numbers pinned below. The tolerance only
absorbs the rounding of another CPU's BLAS; any change to the computation moves these numbers by far more.
To re-pin after an intended numerical change, print `fingerprint(...)` of the failing case.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iasa.attention.config import LayoutRuleConfig, SparseAttentionConfig
from iasa.attention.layout import SparseLayout
from iasa.motion.emage_inference import EmageMotionGenerator
from iasa.motion.emage_model import EmageAudioModel
from iasa.motion.emage_vq import EmageMotionDecoder
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.train.adapters import adapter_parameters, copy_adapter, set_trainable, use_adapter
from iasa.train.cache import read_clip, write_negative_context, write_clip
from iasa.train.config import DistillConfig, FlowConfig, RegionLossConfig
from iasa.train.distill import CRITIC, GENERATOR, TEACHER, Distiller
from iasa.train.finetune import flow_matching_loss
from iasa.train.flow_matching import TrainingSchedule
from iasa.train.model import PoseDiT, load_training_components
from iasa.train.tasks import main
from iasa.video.assembly import build_random
from iasa.video.attention_patch import patch_self_attention
from iasa.video.config import (
    ARCHITECTURES,
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    AttentionConfig,
    AttentionPatchConfig,
    LongVideoConfig,
    SamplerConfig,
    VideoModelConfig,
)
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.lora import inject_lora
from iasa.video.pipeline import VideoGenerator
from iasa.video.sampler import WindowInputs, sample_latents
from iasa.video.vae_decode import decode_video
from iasa.video.windows import Window

TINY = ARCHITECTURES["tiny"]
TINY_MODEL = VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu")
CPU = torch.device("cpu")
FRAMES, HEIGHT, WIDTH = 3, 8, 12  # latent grid of the DiT cases: 3 x 4 x 6 tokens
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: the same summation order on every machine with the same BLAS."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fingerprint(tensor: torch.Tensor) -> list[float]:
    """Eight evenly spaced values, the mean and the mean absolute value of a tensor."""
    flat = tensor.detach().double().flatten()
    picks = flat[torch.linspace(0, flat.numel() - 1, 8).round().long()]
    return [*picks.tolist(), flat.mean().item(), flat.abs().mean().item()]


def seeded(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=generator)


def hand_made_layout(frames: int, grid: tuple[int, int]) -> SparseLayout:
    """Causal frame choice and three regions plus background laid out in stripes."""
    tokens = grid[0] * grid[1]
    selection = torch.ones(frames, frames, dtype=torch.bool).tril()
    regions = (torch.arange(frames * tokens).view(frames, tokens) // 5) % 4
    return SparseLayout(frame_selection=selection, token_regions=regions, grid_size=grid)


def random_keypoints(num_frames: int, image_size: tuple[int, int], seed: int) -> WholeBodyKeypoints:
    """A fixed pose jittered per frame, every point confident."""
    rng = np.random.default_rng(seed)

    def points(*shape: int) -> np.ndarray:
        base = rng.uniform(0.25, 0.75, (1, *shape, 2))
        return np.clip(base + rng.normal(0, 0.02, (num_frames, *shape, 2)), 0, 1).astype(np.float32)

    body, hands, face = points(18), points(2, 21), points(68)
    return WholeBodyKeypoints(
        body, np.ones(body.shape[:-1], np.float32), hands, np.ones(hands.shape[:-1], np.float32), face,
        np.ones(face.shape[:-1], np.float32), image_size,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ the cases
def dit_conditions(seed: int = 1) -> dict[str, torch.Tensor]:
    randn = seeded(seed)
    return {
        "latents": randn(1, LATENT_CHANNELS, FRAMES, HEIGHT, WIDTH),
        "context": randn(1, TINY.text_length, TINY.text_dim),
        "negative": randn(1, TINY.text_length, TINY.text_dim),
        "clip_feature": randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM),
        "y": randn(1, CONDITION_CHANNELS, FRAMES, HEIGHT, WIDTH),
        "pose_video": torch.rand(1, 3, 4 * (FRAMES - 1) + 1, 8 * HEIGHT, 8 * WIDTH, generator=torch.Generator().manual_seed(seed)),
        "reference_pose": torch.rand(1, 3, 8 * HEIGHT, 8 * WIDTH, generator=torch.Generator().manual_seed(seed + 1)),
    }


def tiny_dit_and_pose_guider():
    torch.manual_seed(0)
    dit = build_random("dit", TINY, CPU, torch.float32)
    guider = build_random("pose_guider", TINY, CPU, torch.float32)
    return dit, guider


@torch.no_grad()
def golden_pose_guider() -> dict[str, torch.Tensor]:
    _, guider = tiny_dit_and_pose_guider()
    inputs = dit_conditions()
    return {
        "pose_features": guider.pose_features(inputs["pose_video"]),
        "reference_condition": guider.reference_condition(inputs["reference_pose"]),
    }


@torch.no_grad()
def golden_dit_flow() -> dict[str, torch.Tensor]:
    """One DiT forward, dense and with a sparse layout, pose features added."""
    dit, guider = tiny_dit_and_pose_guider()
    inputs = dit_conditions()
    features = guider.pose_features(inputs["pose_video"])
    y = inputs["y"] + guider.reference_condition(inputs["reference_pose"])
    patch_self_attention(dit)
    conditions = FlowConditions(inputs["context"], inputs["clip_feature"], y, features)
    outputs = {}
    timestep = torch.tensor([700.0])
    for name, layout in (("dense", None), ("sparse", hand_made_layout(FRAMES, (HEIGHT // 2, WIDTH // 2)))):
        outputs[name] = predict_flow(dit, inputs["latents"], timestep, conditions, layout, "reference")
    return outputs


@torch.no_grad()
def golden_sampler_step() -> dict[str, torch.Tensor]:
    """One flow-matching step with cfg (two DiT passes) from seeded noise, dense and sparse."""
    dit, guider = tiny_dit_and_pose_guider()
    inputs = dit_conditions()
    patch_self_attention(dit)
    features = guider.pose_features(inputs["pose_video"])
    y = inputs["y"] + guider.reference_condition(inputs["reference_pose"])
    conditions = FlowConditions(inputs["context"], inputs["clip_feature"], y, features)
    sampler = SamplerConfig(num_steps=1, cfg_scale=2.5, seed=4)
    denoise = functools.partial(predict_flow, dit, backend="reference")
    outputs = {}
    for name, layout in (("dense", None), ("sparse", hand_made_layout(FRAMES, (HEIGHT // 2, WIDTH // 2)))):
        windows = [WindowInputs(Window(0, FRAMES), conditions, layout)]
        outputs[name] = sample_latents(
            denoise, windows, inputs["negative"], (FRAMES, HEIGHT, WIDTH), sampler, overlap=0, private=0, progress=False
        )
    return outputs


@torch.no_grad()
def golden_vae_decode() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    vae = build_random("vae", TINY, CPU, torch.float32)
    latents = seeded(7)(1, LATENT_CHANNELS, 3, 4, 6)
    return {"video": decode_video(vae, latents, "contiguous", 4)}


def golden_emage_window(tiny_emage_config) -> dict[str, torch.Tensor]:
    """EMAGE on 1.5 s of audio (45 frames: one 64-frame window), tiny random networks."""
    config = tiny_emage_config()
    torch.manual_seed(0)
    generator = EmageMotionGenerator(config, EmageAudioModel(config.audio), EmageMotionDecoder(config))
    rng = np.random.default_rng(0)
    waveform = (0.1 * rng.standard_normal(24000) * np.sin(np.linspace(0, 9 * np.pi, 24000)) ** 2).astype(np.float32)
    motion = generator(waveform)
    return {name: torch.from_numpy(getattr(motion, name)) for name in ("poses", "expressions", "trans")}


@torch.no_grad()
def golden_generate() -> dict[str, torch.Tensor]:
    """The whole video pipeline (conditions, pose guider, sparse layouts, two overlapping windows, the second
    with one private leading frame, cfg, VAE decode) on a 13-frame 32x32 clip."""
    torch.manual_seed(0)
    attention = AttentionPatchConfig(attention="iasa", backend="reference", sparse=SparseAttentionConfig(top_k=1))
    long_video = LongVideoConfig(window_latent_frames=3, overlap_latent_frames=1, private_leading_latent_frames=1)
    generator = VideoGenerator.from_config(TINY_MODEL, attention, long_video)
    rng = np.random.default_rng(3)
    pose_video = rng.integers(0, 255, (13, 32, 32, 3), dtype=np.uint8)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    keypoints = random_keypoints(13, (32, 32), seed=4)
    sampler = SamplerConfig(num_steps=2, cfg_scale=2.0, seed=1, prompt="a person", negative_prompt="blurry")
    video = generator.generate(image, pose_video, pose_video[0], keypoints, sampler, progress=False)
    return {"video": torch.from_numpy(video).float()}


# ------------------------------------------------------------------------------------------ training cases
CACHE_FRAMES, CACHE_SIZE = 9, 32  # 9 video frames of 32 x 32 -> 3 latent frames of 4 x 4, 2 x 2 tokens


def write_golden_cache(cache_dir: Path, clips: int = 2) -> Path:
    """Cached training clips of seeded random tensors, hand-made layouts and jittered keypoints."""
    randn = seeded(11)
    latent = (3, CACHE_SIZE // 8, CACHE_SIZE // 8)
    write_negative_context(cache_dir, randn(1, TINY.text_length, TINY.text_dim))
    for index in range(clips):
        pose = (torch.rand(3, CACHE_FRAMES, CACHE_SIZE, CACHE_SIZE, generator=torch.Generator().manual_seed(index)) * 255).round().to(torch.uint8)
        tensors = {
            "latents": randn(LATENT_CHANNELS, *latent), "y": randn(CONDITION_CHANNELS, *latent),
            "clip_feature": randn(CLIP_TOKENS, CLIP_FEATURE_DIM), "context": randn(TINY.text_length, TINY.text_dim),
            "pose_video": pose, "reference_pose": pose[:, 0],
        }  # fmt: skip
        both = hand_made_layout(3, (2, 2))
        both = SparseLayout(torch.ones(3, 3, dtype=torch.bool), both.token_regions, both.grid_size)
        layouts = {"both": both, "past": hand_made_layout(3, (2, 2))}
        keypoints = random_keypoints(CACHE_FRAMES, (CACHE_SIZE, CACHE_SIZE), seed=index)
        write_clip(cache_dir, f"clip{index}_w000", tensors, layouts, keypoints, "a prompt", LayoutRuleConfig(), "unianimate")
    return cache_dir


@pytest.fixture(scope="module")
def golden_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_golden_cache(tmp_path_factory.mktemp("golden") / "cache")


def randomize(parameters, seed: int, scale: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in parameters:
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))


def gradient_summary(parameters: dict[str, torch.nn.Parameter]) -> torch.Tensor:
    """Per parameter (in name order): the sum and the sum of absolute values of its gradient."""
    return torch.stack([torch.stack([p.grad.sum(), p.grad.abs().sum()]) for _, p in sorted(parameters.items())])


def golden_train_loss(cache_dir: Path) -> dict[str, torch.Tensor]:
    """The fine-tune's flow-matching loss on a cached clip and its gradients, blocks checkpointed."""
    torch.manual_seed(0)
    components = load_training_components(TINY_MODEL, ("dit", "pose_guider"))
    model = PoseDiT(components.dit, components.pose_guider, components.dtype, "reference", gradient_checkpointing=True)
    inject_lora(model.dit, 4, 4)
    use_adapter(model.dit, "default")
    lora = adapter_parameters(model.dit, "default")
    randomize([p for key, p in lora.items() if "lora_B" in key], seed=5)
    trained = {**{f"lora.{k}": p for k, p in lora.items()}, **{f"pose.{k}": p for k, p in model.pose_guider.named_parameters()}}
    set_trainable([model.dit, model.pose_guider], list(trained.values()))
    batch = read_clip(cache_dir, "clip0_w000")
    torch.manual_seed(2)
    loss = flow_matching_loss(model, batch.latents, batch, batch.layouts["both"], TrainingSchedule.from_config(FlowConfig()), FlowConfig())
    loss.backward()
    return {"loss": loss.detach()[None], "gradients": gradient_summary(trained)}


def golden_distill_losses(cache_dir: Path) -> dict[str, torch.Tensor]:
    """DMD's critic and generator losses (teacher cfg, region loss) and their gradients, blocks checkpointed."""
    torch.manual_seed(0)
    components = load_training_components(TINY_MODEL, ("dit", "pose_guider", "vae"))
    model = PoseDiT(components.dit, components.pose_guider, components.dtype, "reference", gradient_checkpointing=True)
    dit = model.dit
    for name in (TEACHER, GENERATOR, CRITIC):
        inject_lora(dit, 4, 4, adapter_name=name)
    randomize(adapter_parameters(dit, TEACHER).values(), seed=6)
    copy_adapter(dit, TEACHER, GENERATOR)
    copy_adapter(dit, TEACHER, CRITIC)
    config = DistillConfig(
        attention=AttentionConfig(attention="iasa"), generator_sigmas=(1.0, 0.5), teacher_cfg_scale=2.0,
        region=RegionLossConfig(weight=1.0, latent_frames=1),
    )  # fmt: skip
    distiller = Distiller(config, model, components.vae)
    batch = read_clip(cache_dir, "clip1_w000")
    outputs = {}
    for role, loss_of in ((CRITIC, distiller.critic_loss), (GENERATOR, distiller.generator_loss)):
        parameters = adapter_parameters(dit, role)
        set_trainable([dit, model.pose_guider], list(parameters.values()))
        torch.manual_seed(3)
        losses = loss_of(batch)
        losses = losses if isinstance(losses, dict) else {"total": losses}
        losses["total"].backward()
        outputs[f"{role}_losses"] = torch.stack([losses[key].detach() for key in sorted(losses)])
        outputs[f"{role}_gradients"] = gradient_summary(parameters)
    return outputs


MODEL_OVERRIDES = ["model.model_size=tiny", "model.model_dir=null", "model.unianimate_checkpoint=null", "model.dtype=float32",
                   "model.device=cpu", "attention.backend=reference"]  # fmt: skip


def run_overrides(cache_dir: Path, output: Path, steps: int) -> list[str]:
    return [*MODEL_OVERRIDES, f"cache_dir={cache_dir}", f"run.output_dir={output}", f"run.max_steps={steps}",
            "run.mixed_precision=fp32", "run.report_to=none", f"run.checkpoint_every={steps}"]  # fmt: skip


def golden_train_and_distill_steps(cache_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """Two optimiser steps of the train task, then one of the distill task from that LoRA, by the command line."""
    train = main(["--config", "config/train_sparseattn_lora.yaml", *run_overrides(cache_dir, tmp_path / "train", 2),
                  "lora.rank=4", "lora.alpha=4"])  # fmt: skip
    distill = main(["--config", "config/distill_dmd.yaml", *run_overrides(cache_dir, tmp_path / "distill", 1),
                    f"teacher_lora={train / 'lora.safetensors'}", f"teacher_pose_guider={train / 'pose_guider.safetensors'}",
                    "critic_steps_per_generator_step=1", "generator_sigmas=[1.0,0.5]", "teacher_cfg_scale=2.0"])  # fmt: skip
    outputs = {}
    for name, folder in (("train", train), ("distill", distill)):
        weights = load_file(str(folder / "checkpoints" / f"step-{2 if name == 'train' else 1:08d}" / "trainable.safetensors"))
        outputs[name] = torch.stack([torch.stack([value.sum(), value.abs().sum()]) for _, value in sorted(weights.items())])
    return outputs


# ------------------------------------------------------------------------------------------ pinned numbers
PINNED: dict[str, dict[str, list[float]]] = {
    "pose_guider": {
        "pose_features": [-0.112458751, -0.0634675249, -0.0935900956, -0.0754325613, -0.0928450897, 0.107325152, -0.112574972, 0.122071199, -0.0144801123, 0.0579345282],
        "reference_condition": [-0.0655719638, 0.0462508164, 0.0231976677, 0.0426360667, -0.0124516552, -0.0690598339, 0.0313002914, 0.000376366079, -0.00490450787, 0.0357042416],
    },
    "dit_flow": {
        "dense": [0.51859355, 0.584257603, 0.480229914, 0.500659406, -0.825505614, -0.239046663, -0.285583645, -0.251394898, -0.00513030422, 0.466130461],
        "sparse": [0.500874043, 0.55489254, 0.523728609, 0.508141756, -0.827055097, -0.257392049, -0.278415024, -0.2765297, -0.00532339599, 0.466605721],
    },
    "sampler_step": {
        "dense": [-1.26478386, -1.78227568, 0.504173756, 0.709012568, 0.505573332, 1.28556561, -0.544864178, 0.844209492, -0.0110969507, 0.935323094],
        "sparse": [-1.28612947, -1.77782738, 0.493495822, 0.705202043, 0.531930566, 1.28856516, -0.543375134, 0.858766377, -0.0105275679, 0.935730925],
    },
    "vae_decode": {
        "video": [-0.160510942, 0.148829669, -0.00697705895, -0.519823134, -0.0963410586, -0.0890098289, -0.326900721, -0.387854666, -0.0771971345, 0.221599766],
    },
    "emage_window": {
        "poses": [0.319916993, 0.0, 1.430475, 0.0101250224, 0.852179289, -2.45178986, 0.870535433, -0.773690164, 0.023251009, 1.07742271],
        "expressions": [0.0412826538, 0.20098874, 0.0442965776, -0.0349033996, 0.224656433, -0.0476939678, -0.00497880112, 0.135366395, -0.00583494896, 0.157688438],
        "trans": [0.0, -0.126725942, -0.00257949857, -0.0106060244, -0.00490516098, -0.0173676666, -0.126840502, -0.00830420479, -0.0480649732, 0.0480649732],
    },
    "generate": {
        "video": [139.0, 35.0, 238.0, 239.0, 187.0, 161.0, 172.0, 104.0, 169.157978, 169.157978],
    },
    "train_loss": {
        "loss": [4.66888189, 4.66888189, 4.66888189, 4.66888189, 4.66888189, 4.66888189, 4.66888189, 4.66888189, 4.66888189, 4.66888189],
        "gradients": [-0.00371310953, 0.270524383, 0.234681651, 0.00304142805, 0.0874745399, -0.000349998416, -0.116641968, 0.270554453, 0.131182072, 0.141794734],
    },
    "distill_losses": {
        "critic_losses": [3.57302976, 3.57302976, 3.57302976, 3.57302976, 3.57302976, 3.57302976, 3.57302976, 3.57302976, 3.57302976, 3.57302976],
        "critic_gradients": [0.00479715271, 0.305229127, 0.205396742, -0.0072659147, 0.436061889, 0.00449631736, 0.0323212557, 0.149562791, 0.119548265, 0.122247621],
        "generator_losses": [0.00317789125, 0.00317789125, 0.483468294, 0.483468294, 0.483468294, 0.483468294, 0.486646175, 0.486646175, 0.324430787, 0.324430787],
        "generator_gradients": [-0.00228871778, 0.224417657, 0.0728289708, 0.00126959186, 0.347282708, 0.00195352733, 0.0160025004, 0.0724287778, 0.0602531763, 0.0626631272],
    },
    "train_and_distill_steps": {
        "train": [-0.409662515, 0.0728447512, 15.267952, 0.492167592, 0.0355470702, 2.27114964, 0.00342970341, 94.9831238, 15.5980408, 15.7571008],
        "distill": [-0.409901828, 0.0334698036, 16.4330788, 0.248165056, 0.0357491747, 0.00439680135, 0.492090583, 0.0341370851, 4.22530247, 4.32776878],
    },
}  # fmt: skip


def check(case: str, outputs: dict[str, torch.Tensor]) -> None:
    assert outputs.keys() == PINNED[case].keys()
    for name, tensor in outputs.items():
        got = torch.tensor(fingerprint(tensor), dtype=torch.float64)
        expected = torch.tensor(PINNED[case][name], dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL, msg=f"{case}.{name}: {got.tolist()}")


@pytest.mark.parametrize(
    "case",
    ["pose_guider", "dit_flow", "sampler_step", "vae_decode", "emage_window", "generate"],
)
def test_inference_outputs_are_pinned(case: str, request: pytest.FixtureRequest) -> None:
    compute = globals()[f"golden_{case}"]
    fixtures = {name: request.getfixturevalue(name) for name in inspect.signature(compute).parameters}
    check(case, compute(**fixtures))


def test_training_losses_and_gradients_are_pinned(golden_cache: Path) -> None:
    check("train_loss", golden_train_loss(golden_cache))
    check("distill_losses", golden_distill_losses(golden_cache))


def test_training_steps_are_pinned(golden_cache: Path, tmp_path: Path) -> None:
    check("train_and_distill_steps", golden_train_and_distill_steps(golden_cache, tmp_path))
