"""The miniature Table 2: each variant (teacher dense / + sparse global / + sparse global and local / + DMD
1 step / + region loss) generates every held-out clip of the synthetic dataset, and is scored against the
ground truth.

A clip is generated as a user would make it, through the real inference path (iasa.video.pipeline
VideoGenerator, built from an InferenceConfig): the reference image is the clip's first ground-truth frame,
the pose video is drawn from the clip's ground-truth keypoints (the motion the ground truth shows, so the
frames can be compared pixel for pixel), in the style the variant's LoRA file records. The ground truth is
rendered from those keypoints (iasa.synthetic: ``render_avatar(keypoints, identity)``), so no video decoder
is needed and nothing is lost to compression.

A variant is a training stage's files plus inference overrides (config/miniature/eval.yaml):
    model.model_dir        <runs>/<model_stage>/model   (the from-scratch networks: DiT, VAE, text encoder)
    model.lora_path        <runs>/<stage>/lora.safetensors  (null for a stage without one: the teacher)
    model.pose_guider_path <runs>/<stage>/pose_guider.safetensors
then `inference` (every variant) and the variant's own `overrides`, as key=value on InferenceConfig.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from einops import rearrange

from iasa.attention import build_sparse_layout, density_statistics
from iasa.config import check, load_config
from iasa.errors import InputError
from iasa.eval.speed import frames_per_second
from iasa.eval.video_metrics import CLIP_METRICS, aggregate, evaluate_clip, psnr, ssim
from iasa.pose.drawing import draw_pose_frames
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.synthetic.avatar import render_avatar
from iasa.synthetic.dataset import MANIFEST, identity_of_clip
from iasa.video.inference import InferenceConfig, inference_pose_style
from iasa.video.latent_grid import TOKEN_STRIDE, num_latent_frames, padded_frame_count
from iasa.video.pipeline import VideoGenerator, pad_keypoints
from iasa.video.stream_decode import to_uint8_frames
from iasa.video.windows import plan_windows

# The files of a stage folder that a variant reads, and the model folder of the from-scratch networks.
STAGE_LORA = "lora.safetensors"
STAGE_POSE_GUIDER = "pose_guider.safetensors"
MODEL_FOLDER = "model"
HELD_OUT_SPLIT = "heldout"
# What a variant runs with on the CPU (device=cpu, and the fps_cpu timing): float32 and the reference sparse
# kernel (the fast and flex kernels and FP8 are CUDA-only).
CPU_OVERRIDES = ("model.device=cpu", "model.dtype=float32", "attention.backend=reference", "speed.dit_precision=bf16")
ROW_KEYS = ("variant", "steps", "attention", "density", *CLIP_METRICS, "fps_gpu", "fps_cpu")


class MiniatureFilesError(InputError, FileNotFoundError):
    """A file of the miniature's dataset or training stages that is missing."""


@dataclass
class VariantConfig:
    """One row of the table."""

    # The row's name in miniature.json and on the grid.
    name: str = ""
    # The stage folder under `runs` whose pose_guider.safetensors (and lora.safetensors) it uses.
    stage: str = ""
    # Whether the stage wrote a LoRA (the teacher trains every DiT weight into its model/ folder: none).
    lora: bool = True
    # key=value overrides of InferenceConfig after `inference` (sampler.num_steps, attention.attention, ...).
    overrides: list[str] = field(default_factory=list)


@dataclass
class MiniatureEvalConfig:
    # The folder make_synthetic_dataset.py wrote (its heldout/ split is evaluated).
    dataset: str = "data/miniature"
    # The folder of the stage folders (run_miniature.sh's output).
    runs: str = "outputs/miniature"
    # The stage whose model/ folder holds the networks every variant starts from.
    model_stage: str = "teacher"
    out: str = "benchmarks/results/miniature.json"
    grid: str = "benchmarks/results/miniature_grid.png"
    # Torch device of generation and of fps_gpu ("auto" = cuda when available); fps_cpu always runs on the CPU.
    device: str = "auto"
    # Held-out clips evaluated (in the manifest's order); null = all.
    max_clips: Optional[int] = None
    # Clips timed on the CPU for fps_cpu (0 = no CPU timing), with this many torch threads (null = every core).
    cpu_clips: int = 2
    cpu_threads: Optional[int] = None
    # Timed repeats (after one untimed warm-up) of the first clip for fps_gpu.
    gpu_repeats: int = 3
    # The clip of the grid (index among the evaluated ones) and how many evenly spaced frames it shows.
    grid_clip: int = 0
    grid_frames: int = 5
    # The variant compared with itself at speed.dit_precision=fp8 and with speed.decoder=tae (on CUDA).
    student: str = "dmd_region"
    # A TAE decoder trained for the miniature (iasa.video.tae format); null = no TAE-vs-VAE keys.
    tae_checkpoint: Optional[str] = None
    # key=value overrides of InferenceConfig shared by every variant (model size, dtype, pose size, ...).
    inference: list[str] = field(default_factory=list)
    variants: list[VariantConfig] = field(default_factory=list)

    def validate(self) -> None:
        names = [variant.name for variant in self.variants]
        check(bool(names) and all(names), "variants", names, "list at least one variant, each with a name")
        check(len(set(names)) == len(names), "variants", names, "variant names must differ")
        check(self.max_clips is None or self.max_clips >= 1, "max_clips", self.max_clips, "must be >= 1 or null")
        check(self.cpu_clips >= 0, "cpu_clips", self.cpu_clips, "must be >= 0")
        check(self.cpu_threads is None or self.cpu_threads >= 1, "cpu_threads", self.cpu_threads, "must be >= 1 or null")
        check(self.gpu_repeats >= 1, "gpu_repeats", self.gpu_repeats, "must be >= 1")
        check(self.grid_frames >= 1, "grid_frames", self.grid_frames, "must be >= 1")
        check(self.student in names, "student", self.student, f"must name a variant ({names})")


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class HeldOutClip:
    """One clip: its name, keypoints (F frames) and ground-truth frames (F, H, W, 3) uint8."""

    name: str
    keypoints: WholeBodyKeypoints
    truth: np.ndarray


def held_out_clip_names(dataset: str | Path) -> list[str]:
    split = Path(dataset) / HELD_OUT_SPLIT
    manifest = split / MANIFEST
    if not manifest.is_file():
        raise MiniatureFilesError(
            f"{manifest} does not exist; write the dataset with scripts/make_synthetic_dataset.py --out {dataset}"
        )
    return list(json.loads(manifest.read_text())["clips"])


def load_held_out_clip(dataset: str | Path, name: str) -> HeldOutClip:
    split = Path(dataset) / HELD_OUT_SPLIT
    path = split / "keypoints" / f"{name}.npz"
    if not path.is_file():
        raise MiniatureFilesError(f"{path} does not exist; the held-out split is incomplete: write it again")
    keypoints = WholeBodyKeypoints.load(path)
    return HeldOutClip(name, keypoints, render_avatar(keypoints, identity_of_clip(split, name)))


# ---------------------------------------------------------------------------------------------- variants
def stage_file(runs: str | Path, stage: str, name: str) -> Path:
    path = Path(runs) / stage / name
    if not path.exists():
        raise MiniatureFilesError(
            f"{path} does not exist: it is written by the miniature's '{stage}' stage (scripts/run_miniature.sh); "
            f"run that stage or set runs= to the folder that holds it"
        )
    return path


def variant_inference_config(
    config: MiniatureEvalConfig, variant: VariantConfig, extra: Sequence[str] = ()
) -> InferenceConfig:
    """The InferenceConfig of one variant: its stage's files, then config.inference, variant.overrides,
    CPU_OVERRIDES when config.device is the CPU, extra."""
    from iasa.video.assembly import resolve_device

    lora = stage_file(config.runs, variant.stage, STAGE_LORA) if variant.lora else None
    files = [
        f"model.model_dir={stage_file(config.runs, config.model_stage, MODEL_FOLDER)}",
        f"model.lora_path={'null' if lora is None else lora}",
        f"model.pose_guider_path={stage_file(config.runs, variant.stage, STAGE_POSE_GUIDER)}",
        f"model.device={config.device}",
    ]
    on_cpu = resolve_device(config.device).type == "cpu"
    cpu = CPU_OVERRIDES if on_cpu else ()
    return load_config(InferenceConfig, None, [*files, *config.inference, *variant.overrides, *cpu, *extra])


@dataclass
class VariantRunner:
    """A variant's networks, loaded once, and what generating one clip needs."""

    inference: InferenceConfig
    generator: VideoGenerator
    pose_style: str

    @classmethod
    def load(cls, inference: InferenceConfig) -> "VariantRunner":
        generator = VideoGenerator.from_config(inference.model, inference.attention, inference.long_video, inference.speed)
        return cls(inference, generator, inference_pose_style(inference.pose.style, inference.model))

    def generate(self, clip: HeldOutClip, progress: bool = False) -> np.ndarray:
        """The clip made from its first ground-truth frame and its keypoints: (F, H, W, 3) uint8."""
        pose_video = draw_pose_frames(clip.keypoints, self.pose_style)
        return self.generator.generate(
            clip.truth[0], pose_video, pose_video[0], clip.keypoints, self.inference.sampler, progress=progress
        )

    def density(self, clip: HeldOutClip) -> float:
        """Allowed token pairs / all pairs of the sparse layouts generation builds (1 for dense attention),
        averaged over the clip's windows weighted by their pairs."""
        if self.inference.attention.attention != "iasa":
            return 1.0
        keypoints = pad_keypoints(clip.keypoints, padded_frame_count(clip.keypoints.num_frames))
        height, width = keypoints.image_size
        long_video = self.inference.long_video
        allowed = total = 0.0
        windows = plan_windows(
            num_latent_frames(keypoints.num_frames), long_video.window_latent_frames, long_video.overlap_latent_frames
        )
        for window in windows:
            frames = window.video_frames
            layout = build_sparse_layout(
                keypoints.slice_frames(frames.start, frames.stop), self.inference.attention.sparse,
                grid_size=(height // TOKEN_STRIDE, width // TOKEN_STRIDE),
            )  # fmt: skip
            pairs = float(layout.num_tokens) ** 2
            allowed += density_statistics(layout)["token_density"] * pairs
            total += pairs
        return allowed / total


# ---------------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else platform.processor()."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def gpu_name(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: a metric no clip defines (NaN) or an exact copy (inf dB) is written as null."""
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class VariantResult:
    row: dict
    # The grid clip's video, and every evaluated clip's video when kept for the fp8 / TAE comparisons.
    grid_video: np.ndarray
    videos: list[np.ndarray] | None


def evaluate_variant(
    config: MiniatureEvalConfig,
    variant: VariantConfig,
    clips: list[HeldOutClip],
    keep_videos: bool,
    bar: Callable[[int], None],
) -> VariantResult:
    inference = variant_inference_config(config, variant)
    runner = VariantRunner.load(inference)
    device = runner.generator.components.device
    scores, videos, densities, grid_video = [], [], [], None
    for index, clip in enumerate(clips):
        video = runner.generate(clip)
        scores.append(evaluate_clip(video, clip.truth, clip.keypoints))
        densities.append(runner.density(clip))
        if keep_videos:
            videos.append(video)
        if index == config.grid_clip:
            grid_video = video
        bar(1)
    fps_gpu = None
    if device.type == "cuda":
        fps_gpu = gpu_fps(runner, clips[0], device, config.gpu_repeats)
    del runner
    fps_cpu = cpu_fps(config, variant, clips[: config.cpu_clips]) if config.cpu_clips else None
    metrics = aggregate(scores)
    row = {
        "variant": variant.name,
        "steps": inference.sampler.num_steps,
        "attention": attention_label(inference),
        "density": float(np.mean(densities)),
        **{key: finite_or_none(metrics[key]) for key in CLIP_METRICS},
        "fps_gpu": fps_gpu,
        "fps_cpu": fps_cpu,
    }
    return VariantResult(row, grid_video, videos if keep_videos else None)


# --------------------------------------------------------------------------------------------- baselines
def baseline_rows(config: MiniatureEvalConfig, clips: list[HeldOutClip]) -> list[dict]:
    """Two rows that frame the variants', scored the same way: `reference_still`, each clip's first frame (the
    reference every variant starts from) held for the whole clip, what a model that ignores the pose gets; and
    `vae_round_trip`, the ground truth encoded and decoded by the model folder's VAE, the most a variant can
    reach, since its frames come out of that decoder."""
    student = next(variant for variant in config.variants if variant.name == config.student)
    generator = VariantRunner.load(variant_inference_config(config, student)).generator
    c = generator.components
    still, round_trip = [], []
    for clip in clips:
        still.append(evaluate_clip(np.repeat(clip.truth[:1], len(clip.truth), axis=0), clip.truth, clip.keypoints))
        frames = rearrange(torch.from_numpy(clip.truth), "f h w c -> c f h w").to(c.device, c.dtype) / 127.5 - 1
        with torch.no_grad():
            latents = c.vae.encode([frames], device=c.device).to(c.dtype)
            decoded = to_uint8_frames(generator.decode(latents))
        round_trip.append(evaluate_clip(decoded[: len(clip.truth)], clip.truth, clip.keypoints))
    return [
        {"baseline": name, **{key: finite_or_none(value) for key, value in aggregate(scores).items()}}
        for name, scores in (("reference_still", still), ("vae_round_trip", round_trip))
    ]


def attention_label(inference: InferenceConfig) -> str:
    """dense, or iasa/<direction>/<global or global+local> as the sparse config sets it."""
    attention = inference.attention
    if attention.attention != "iasa":
        return attention.attention
    sparse = attention.sparse
    # local_regions: the switch of the region (local) mask, added with the miniature's global-only stage.
    parts = "global+local" if getattr(sparse, "local_regions", True) else "global"
    return f"iasa/{sparse.direction}/{parts}"


def gpu_fps(runner: VariantRunner, clip: HeldOutClip, device: torch.device, repeats: int) -> float:
    """Frames per second of the variant making `clip` on the GPU (after one untimed warm-up)."""
    return frames_per_second(lambda: runner.generate(clip), clip.truth.shape[0], device, repeats=repeats)


def cpu_fps(config: MiniatureEvalConfig, variant: VariantConfig, clips: list[HeldOutClip]) -> float:
    """Frames per second of the variant on the CPU (float32, the reference sparse kernel) over `clips`."""
    inference = variant_inference_config(config, variant, CPU_OVERRIDES)
    runner = VariantRunner.load(inference)
    frames = sum(clip.truth.shape[0] for clip in clips)

    def generate_all() -> None:
        for clip in clips:
            runner.generate(clip)

    return frames_per_second(generate_all, frames, "cpu", repeats=1, warmup=0, cpu_threads=cpu_thread_count(config))


def cpu_thread_count(config: MiniatureEvalConfig) -> int:
    return config.cpu_threads if config.cpu_threads is not None else (os.cpu_count() or 1)


def video_agreement(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> dict[str, float | None]:
    """PSNR (through the mean MSE) and mean SSIM of `second` against `first`, clip by clip."""
    scores = [{"psnr": psnr(b, a), "ssim": ssim(b, a)} for a, b in zip(first, second, strict=True)]
    return {key: finite_or_none(value) for key, value in aggregate(scores).items()}


def student_comparisons(
    config: MiniatureEvalConfig, student: VariantResult, clips: list[HeldOutClip], device: torch.device
) -> dict[str, dict]:
    """On CUDA: the student's video at speed.dit_precision=fp8 against its bf16 video; with tae_checkpoint,
    its TAE-decoded video against its VAE-decoded one (extra keys of miniature.json)."""
    extra: dict[str, dict] = {}
    if device.type != "cuda" or student.videos is None:
        return extra
    variant = next(v for v in config.variants if v.name == config.student)
    comparisons = {"fp8_vs_bf16": ["speed.dit_precision=fp8"]}
    if config.tae_checkpoint is not None:
        if not Path(config.tae_checkpoint).is_file():
            raise MiniatureFilesError(
                f"tae_checkpoint={config.tae_checkpoint} does not exist; fix the path or set tae_checkpoint=null"
            )
        comparisons["tae_vs_vae"] = ["speed.decoder=tae", f"speed.tae_checkpoint={config.tae_checkpoint}"]
    for key, overrides in comparisons.items():
        runner = VariantRunner.load(variant_inference_config(config, variant, overrides))
        videos = [runner.generate(clip) for clip in clips]
        agreement = video_agreement(student.videos, videos)
        fps = gpu_fps(runner, clips[0], device, config.gpu_repeats)
        extra[key] = {"variant": variant.name, "overrides": overrides, **agreement, "fps_gpu": fps}
        del runner
    return extra


def grid_frame_indices(frames: int, count: int) -> list[int]:
    return sorted(set(np.linspace(0, frames - 1, min(count, frames)).round().astype(int).tolist()))


def evaluated_clips(config: MiniatureEvalConfig, progress: bool) -> list[HeldOutClip]:
    """The first max_clips held-out clips with their ground truth."""
    from tqdm import tqdm

    names = held_out_clip_names(config.dataset)[: config.max_clips]
    check(config.grid_clip < len(names), "grid_clip", config.grid_clip, f"must be below the {len(names)} evaluated clips")
    return [load_held_out_clip(config.dataset, name) for name in tqdm(names, desc="ground truth", disable=not progress)]


def dataset_record(config: MiniatureEvalConfig, clips: list[HeldOutClip]) -> dict:
    """What a result file says of the clips it scored."""
    return {"path": str(config.dataset), "split": HELD_OUT_SPLIT, "clips": len(clips)}


def run_baselines(config: MiniatureEvalConfig, progress: bool = True) -> dict:
    """Only the baseline rows (no variant is generated: minutes on a CPU); writes config.out, returns its payload."""
    from iasa.atomic_io import write_json

    clips = evaluated_clips(config, progress)
    payload = {
        "torch": torch.__version__,
        "dataset": dataset_record(config, clips),
        "model_stage": config.model_stage,
        "baselines": baseline_rows(config, clips),
    }
    write_json(config.out, payload)
    return payload


def run_evaluation(config: MiniatureEvalConfig, progress: bool = True) -> dict:
    """Evaluate every variant; writes config.out (JSON) and config.grid (PNG); returns the JSON payload."""
    from tqdm import tqdm

    from iasa.atomic_io import write_json
    from iasa.eval.comparison_grid import write_comparison_grid
    from iasa.video.assembly import resolve_device

    # Every variant's files first, so a missing stage fails in seconds, not after the first rows.
    for variant in config.variants:
        variant_inference_config(config, variant)
    clips = evaluated_clips(config, progress)
    device = resolve_device(config.device)
    rows, grid_rows, labels = [], {"ground truth": clips[config.grid_clip].truth}, {}
    student = None
    with tqdm(total=len(config.variants) * len(clips), desc="variants x clips", disable=not progress) as bar:
        for variant in config.variants:
            bar.set_postfix_str(variant.name)
            result = evaluate_variant(config, variant, clips, keep_videos=variant.name == config.student, bar=bar.update)
            rows.append(result.row)
            grid_rows[variant.name] = result.grid_video
            grid_psnr = psnr(result.grid_video, clips[config.grid_clip].truth)
            labels[variant.name] = f"{variant.name}\n{grid_psnr:.1f} dB"
            if variant.name == config.student:
                student = result
    payload = {
        "gpu": gpu_name(device),
        "torch": torch.__version__,
        "cpu": {"name": cpu_name(), "threads": cpu_thread_count(config)},
        "dataset": dataset_record(config, clips),
        "rows": rows,
        "baselines": baseline_rows(config, clips),
        **student_comparisons(config, student, clips, device),
    }
    frames = grid_frame_indices(clips[config.grid_clip].truth.shape[0], config.grid_frames)
    write_comparison_grid(config.grid, grid_rows, frames, labels)
    write_json(config.out, payload)
    return payload
