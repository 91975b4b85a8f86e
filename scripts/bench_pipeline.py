"""The whole pose-driven Wan2.1-I2V-14B pipeline on one GPU: dense (cuDNN) vs input-aware sparse attention.

    python scripts/bench_pipeline.py                                   # 512x512, 480x832, 720x1280 x 81 frames
    python scripts/bench_pipeline.py --resolutions 480x832 --sparse-backends flex
    python scripts/bench_pipeline.py --resolutions 480x832 --dit-precision bf16 fp8   # fp8 records after bf16

Random weights at the real 14B sizes, built directly on the GPU in bf16 (no files needed). Per resolution:
- motion_s: audio (3.2 s of synthetic speech) -> motion (EMAGE at its real size with random weights, or
  procedural) -> keypoints -> pose video, after one warm-up;
  motion_generate_s, keypoints_s and draw_s split it (audio -> motion, motion -> keypoints, drawing);
- pose_s: the UniAnimate pose guider on the pose video (once per clip);
- sparse kernels: fast and flex by default (flex alone without triton), each with its own records;
- layout_s: the clip's sparse layout (build_sparse_layout on the CPU + the kernel's plan on the GPU);
- dit_step_s: one DiT forward (a 1-step student step at cfg 1), median of --repeats after a warm-up call
  (which pays compilation); dense uses cuDNN SDPA first in the priority list;
- vae_decode_s: Wan VAE decode of the 21 latent frames (untiled) with the pipeline's decode_video
  (iasa.video.vae_decode) at the defaults of InferenceSpeedConfig, after a warm-up (None with an "error"
  when it runs out of memory; the DiT numbers of that resolution are still recorded); next to it
  vae_decode_diffsynth_s (diffsynth's own decode) and vae_decode_variants {"<memory format> x<latent frames
  per call>": seconds} for other settings of decode_video, and e2e_fps_best with the fastest decode_video
  setting (vae_decode_best names it);
- dit_precision: bf16, or fp8 (the DiT blocks' linears in e4m3 through torchao, iasa.video.fp8_linear); with
  --dit-precision bf16 fp8 all bf16 records come first, then the DiT is quantised in place and the DiT
  steps are timed again (motion, pose and VAE numbers are measured once per resolution and reused);
- e2e_fps: 81 frames / (motion_s + pose_s [+ layout_s] + dit_step_s + vae_decode_s): a 1-step student;
  teacher_e2e_fps: the same with 50 steps at cfg 1.5 (100 DiT passes), computed from the same numbers;
- peak_mem_gb: peak GPU memory allocated during the DiT steps and the pipeline's VAE decode
  (vae_peak_mem_gb: per decode setting).
Text and CLIP embeddings (computed once per clip) are not part of the loop timed here.

--throughput runs another matrix instead (issue 14), with the first sparse backend (fast when triton imports):
    python scripts/bench_pipeline.py --throughput                      # 480x832, then 720x1280
- first resolution, DiT variants in this order: bf16 eager (the baseline), fp8 compiled (torchao's e4m3
  row-wise linears, iasa.video.fp8_linear), bf16 compiled (compiled = iasa.video.compiled_blocks, one
  compiled block for all 40); the FP8 linears are swapped in and out beside
  the bf16 ones. Per variant dit_step_s (median of --repeats after dit_first_call_s, which pays compilation)
  and vs_bf16_eager: the flow of that step against the bf16 eager flow (flow_psnr_db, flow_relative_error);
- decoders: wan (decode_video at InferenceSpeedConfig's defaults: channels_last_3d bf16), tae (TAEHV taew2_1,
  random weights, whole clip), wan_compiled (the same Wan VAE decode with its decoder under torch.compile,
  timed last); decode_s after decode_first_call_s. One record per (DiT variant, decoder) with precision,
  compiled, decoder, resolution, dit_step_s, decode_s, e2e_fps (81 frames / (motion_s + pose_s +
  layout_s + dit_step_s + decode_s)), bf16_eager_dit_step_s and dit_speedup_vs_bf16_eager;
- a "kind": "profile" record: seconds per kernel class (gemm, attention, quantisation, copy, elementwise) in
  one step of the fastest variant, and its ten costliest kernels;
- later resolutions: the bf16 eager baseline and the fastest variant of the first, with tae.
Parts not started within --time-budget-s are recorded as skipped; a failing part records its error and the
run goes on.
Results: benchmarks/results/pipeline.json, rewritten after every record; a failure (e.g. out of memory)
becomes a record with "error" and the run goes on.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.attention import SparseAttentionConfig, build_sparse_layout, density_statistics  # noqa: E402
from iasa.eval.speed import synchronize, synchronized_seconds  # noqa: E402
from iasa.motion.procedural import ProceduralMotionGenerator  # noqa: E402
from iasa.pose import draw_pose_frames, motion_to_keypoints  # noqa: E402
from iasa.pose.style import CHECKPOINT_STYLE  # noqa: E402
from iasa.pose.config import PoseConfig  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.attention_patch import patch_self_attention  # noqa: E402
from iasa.video.denoiser import FlowConditions, predict_flow  # noqa: E402
from iasa.video.fp8_linear import (  # noqa: E402
    DIT_PRECISIONS,
    check_fp8_support,
    fp8_eligible,
    quantize_dit_fp8,
    torchao_fp8_linear,
)
from iasa.video.tae import TAE_ARCHITECTURES  # noqa: E402
from iasa.video.vae_decode import decode_video  # noqa: E402
from iasa.video.config import (  # noqa: E402
    ARCHITECTURES,
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    InferenceSpeedConfig,
)
from iasa.video.latent_grid import TOKEN_STRIDE, VAE_STRIDE  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "pipeline.json"
VIDEO_FRAMES, LATENT_FRAMES, SAMPLE_RATE = 81, 21, 16000
TEACHER_DIT_PASSES = 100  # 50 steps x 2 (cfg)
DEFAULT_RESOLUTIONS = ("512x512", "480x832", "720x1280")
# decode_video settings timed (memory format, latent frames per call); the pipeline's defaults first.
_SPEED = InferenceSpeedConfig()
PIPELINE_VAE = f"{_SPEED.vae_memory_format} x{_SPEED.vae_latent_frames_per_call}"
VAE_VARIANTS = list(dict.fromkeys([
    (_SPEED.vae_memory_format, _SPEED.vae_latent_frames_per_call),
    ("contiguous", 1), ("contiguous", LATENT_FRAMES), ("contiguous", _SPEED.vae_latent_frames_per_call),
    ("channels_last_3d", 2 * _SPEED.vae_latent_frames_per_call),
]))  # fmt: skip


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    synchronized_seconds(fn, device)
    return statistics.median(synchronized_seconds(fn, device) for _ in range(repeats))


class PeakMemory:
    """Peak allocated GPU memory in GiB since reset (None off the GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None


def default_sparse_backends() -> list[str]:
    try:
        import triton  # noqa: F401

        from iasa.attention.fast import fast_sparse_attention  # noqa: F401
    except ImportError:
        return ["flex"]
    return ["fast", "flex"]


def prepare_kernel_plan(backend: str, layout, device: torch.device) -> None:
    """Build the kernel's per-clip plan now (cached per layout object), so layout_s holds the per-clip cost."""
    if backend == "fast":
        from iasa.attention.fast import prepare_fast_layout

        prepare_fast_layout(layout, device)
    elif backend == "flex":
        from iasa.attention.flex import cached_flex_plan

        cached_flex_plan(layout, device)


def speech(seconds: float) -> np.ndarray:
    """Amplitude-modulated tones: enough structure for onsets and loudness."""
    time_s = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 2.5 * time_s)) ** 2
    return (0.2 * envelope * np.sin(2 * np.pi * 160 * time_s * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * time_s)))).astype(np.float32)


def make_motion_generator(kind: str, device: torch.device) -> Callable[[np.ndarray], object]:
    if kind == "procedural":
        return ProceduralMotionGenerator()
    from iasa.motion.emage_inference import EmageMotionGenerator

    return EmageMotionGenerator.random_init(device=device)


def parse_resolution(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    if height % TOKEN_STRIDE or width % TOKEN_STRIDE:
        raise argparse.ArgumentTypeError(f"{text}: height and width must be multiples of {TOKEN_STRIDE}")
    return height, width


@dataclass
class ClipCosts:
    """Per-resolution work outside the DiT, measured once: motion -> pose video, pose guider, VAE decode."""

    keypoints: object
    pose_features: torch.Tensor
    motion_s: float
    motion_parts: dict  # motion_s split: motion_generate_s (audio -> motion), keypoints_s, draw_s (pose video)
    pose_s: float
    # "<memory format> x<latent frames per call>" or "diffsynth" -> seconds (None when out of memory),
    # peak GiB allocated (None off the GPU), error text (only for those that failed)
    vae: dict
    vae_peak: dict
    vae_errors: dict


@dataclass
class MotionAndPose:
    """audio -> motion -> keypoints -> pose video -> pose features of one clip, with the stage times."""

    keypoints: object
    pose_features: torch.Tensor
    motion_s: float
    motion_parts: dict  # motion_s split: motion_generate_s (audio -> motion), keypoints_s, draw_s (pose video)
    pose_s: float


def measure_motion_and_pose(motion_generator, waveform, pose_guider, height, width, device, dtype) -> MotionAndPose:
    motion_start = time.perf_counter()
    motion = motion_generator(waveform)
    generated = time.perf_counter()
    keypoints = motion_to_keypoints(motion, PoseConfig(image_height=height, image_width=width))
    keypoints = keypoints.slice_frames(0, VIDEO_FRAMES)
    projected = time.perf_counter()
    pose_frames = draw_pose_frames(keypoints, CHECKPOINT_STYLE)
    drawn = time.perf_counter()
    motion_s = drawn - motion_start
    motion_parts = {"motion_generate_s": generated - motion_start, "keypoints_s": projected - generated, "draw_s": drawn - projected}
    if keypoints.num_frames != VIDEO_FRAMES:
        raise RuntimeError(f"motion gave {keypoints.num_frames} frames, expected {VIDEO_FRAMES}")
    with torch.no_grad():
        pose_video = torch.from_numpy(pose_frames).to(device, dtype).permute(3, 0, 1, 2)[None] / 255.0
        pose_s = timed(lambda: pose_guider.pose_features(pose_video), 1, device)
        pose_features = pose_guider.pose_features(pose_video)
    return MotionAndPose(keypoints, pose_features, motion_s, motion_parts, pose_s)


def measure_clip_costs(motion_generator, waveform, pose_guider, vae, arch, height, width, device, dtype, memory) -> ClipCosts:
    clip = measure_motion_and_pose(motion_generator, waveform, pose_guider, height, width, device, dtype)
    with torch.no_grad():
        latents = torch.randn(
            1, LATENT_CHANNELS, LATENT_FRAMES, height // VAE_STRIDE, width // VAE_STRIDE, device=device, dtype=dtype
        )
        # decode_video sets the convolutions' memory format on every call, so the order does not matter.
        variants = {"diffsynth": lambda: vae.decode(latents, device=device)}
        for memory_format, per_call in VAE_VARIANTS:
            variants[f"{memory_format} x{per_call}"] = functools.partial(decode_video, vae, latents, memory_format, per_call)
        times, peaks, errors = {}, {}, {}
        for key, decode in variants.items():
            memory.reset()
            try:
                times[key] = timed(decode, 1, device)
            except Exception as error:  # e.g. out of memory (also as a cuDNN error): the DiT numbers still count
                times[key] = None
                errors[key] = f"VAE decode {key}: {type(error).__name__}: {error}"[:300]
                memory.reset()
            peaks[key] = memory.gib()
        decode_video(vae, latents[:, :, :1])  # leave the VAE in the pipeline's (contiguous) format
        memory.reset()
    return ClipCosts(clip.keypoints, clip.pose_features, clip.motion_s, clip.motion_parts, clip.pose_s, times, peaks, errors)


def run_dit_records(costs, base, dit, backends, sparse_config, args, arch, height, width, device, dtype, memory, add) -> None:
    """Dense, then each sparse kernel: one record each (a failing kernel becomes an error record)."""
    latent_h, latent_w = height // VAE_STRIDE, width // VAE_STRIDE
    with torch.no_grad():
        latents = torch.randn(1, LATENT_CHANNELS, LATENT_FRAMES, latent_h, latent_w, device=device, dtype=dtype)
        y = torch.randn(1, CONDITION_CHANNELS, LATENT_FRAMES, latent_h, latent_w, device=device, dtype=dtype)
        context = torch.randn(1, arch.text_length, arch.text_dim, device=device, dtype=dtype)
        clip_feature = torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM, device=device, dtype=dtype)
        timestep = torch.tensor([1000.0], device=device, dtype=dtype)
        conditions = FlowConditions(context, clip_feature, y, costs.pose_features)
        vae_decode_s = costs.vae[PIPELINE_VAE]
        ours = {key: t for key, t in costs.vae.items() if key != "diffsynth" and t is not None}
        best_vae = min(ours, key=ours.get, default=None)

        def record_for(attention: str, layout, layout_s: float, backend: str = "reference") -> dict:
            memory.reset()
            step = lambda: predict_flow(dit, latents, timestep, conditions, layout, backend)  # noqa: E731
            dit_step_s = timed(step, args.repeats, device)
            vae_peak = costs.vae_peak[PIPELINE_VAE]
            peak = max(memory.gib(), vae_peak) if vae_peak is not None else None
            record = {
                **base, "attention": attention, "dit_step_s": dit_step_s, "vae_decode_s": vae_decode_s,
                "vae_decode_diffsynth_s": costs.vae["diffsynth"], "vae_decode_variants": {
                    key: t for key, t in costs.vae.items() if key not in ("diffsynth", PIPELINE_VAE)
                }, "vae_decode_best": best_vae,
                "motion_s": costs.motion_s, **costs.motion_parts, "pose_s": costs.pose_s, "layout_s": layout_s, "e2e_fps": None,
                "e2e_fps_best": None, "teacher_e2e_fps": None, "peak_mem_gb": peak,
            }  # fmt: skip
            if PIPELINE_VAE in costs.vae_errors:
                record["error"] = costs.vae_errors[PIPELINE_VAE]
            others = {key: text for key, text in costs.vae_errors.items() if key != PIPELINE_VAE}
            if others:
                record["vae_variant_errors"] = others
            if device.type == "cuda":
                record["vae_peak_mem_gb"] = costs.vae_peak
            outside_vae = costs.motion_s + costs.pose_s + layout_s
            if vae_decode_s is not None:
                record["e2e_fps"] = VIDEO_FRAMES / (outside_vae + vae_decode_s + dit_step_s)
                record["teacher_e2e_fps"] = VIDEO_FRAMES / (outside_vae + vae_decode_s + TEACHER_DIT_PASSES * dit_step_s)
            if best_vae is not None:
                record["e2e_fps_best"] = VIDEO_FRAMES / (outside_vae + ours[best_vae] + dit_step_s)
            return record

        dense = record_for("dense", None, 0.0)
        add(dense)
        grid = (height // TOKEN_STRIDE, width // TOKEN_STRIDE)
        for backend in backends:
            try:  # one failing kernel must not cost the other's numbers
                layout_start = time.perf_counter()
                layout = build_sparse_layout(costs.keypoints, sparse_config, grid_size=grid).to(device)
                prepare_kernel_plan(backend, layout, device)
                synchronize(device)
                layout_s = time.perf_counter() - layout_start
                sparse = record_for(f"iasa-{backend}", layout, layout_s, backend)
                density = density_statistics(layout.to("cpu"))["token_density"]
                speedup = dense["dit_step_s"] / sparse["dit_step_s"]
                add({**sparse, "top_k": args.top_k, "density": density, "speedup_vs_dense": speedup})
            except Exception as error:
                traceback.print_exc()
                add({**base, "attention": f"iasa-{backend}", "error": f"{type(error).__name__}: {error}"[:500]})
            memory.reset()



# ---------------------------------------------------------------------------------- --throughput suite
# DiT variants at the first resolution, the bf16 eager baseline first: (precision, compiled).
DIT_VARIANTS = (("bf16", False), ("fp8", True), ("bf16", True))
BASELINE_VARIANT = DIT_VARIANTS[0]
# At the first resolution; the compiled Wan VAE at the very end (its compilation is the longest).
FIRST_DECODERS = ("wan", "tae")
LAST_DECODER = "wan_compiled"
THROUGHPUT_RESOLUTIONS = ("480x832", "720x1280")
# Kernel classes of the profile, first match wins (CUDA kernel names, or aten op names on the CPU). Inductor
# names a fused kernel after the ops it holds and the op it feeds (its activation quantisation reductions are
# "triton_red_fused__scaled_mm_..._amax_...", not GEMMs): one that quantises counts as quantisation.
KERNEL_CLASSES = (
    ("attention", ("attention", "attn", "fmha", "flash", "sdpa", "cross_region", "flex")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "aten::_scaled_mm", "triton_tem", "aten::mm", "aten::addmm", "aten::bmm")),
    ("quantisation", ("amax", "float8", "fp8", "e4m3", "quant")),
    ("copy", ("memcpy", "memset", "direct_copy", "catarray", "aten::copy_", "aten::cat")),
)  # fmt: skip


def kernel_class(name: str) -> str:
    lowered = name.lower()
    return next((label for label, keys in KERNEL_CLASSES if any(key in lowered for key in keys)), "elementwise")


def step_profile(step: Callable[[], object], device: torch.device) -> dict:
    """Seconds per kernel class in one call of `step` (device kernels on CUDA, aten ops on the CPU), and the
    ten costliest kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as profiler:
        step()
        synchronize(device)
    per_kernel: dict[str, float] = {}
    for event in profiler.events():
        if device.type == "cuda":  # kernels (and device copies) only, not the host's launch calls
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            microseconds = event.time_range.elapsed_us()
        elif event.name.startswith("aten::"):
            microseconds = event.self_cpu_time_total
        else:
            continue
        per_kernel[event.name] = per_kernel.get(event.name, 0.0) + microseconds / 1e6
    classes = {label: 0.0 for label, _ in KERNEL_CLASSES} | {"elementwise": 0.0}
    for name, seconds in per_kernel.items():
        classes[kernel_class(name)] += seconds
    top = sorted(per_kernel.items(), key=lambda item: -item[1])[:10]
    return {"seconds_per_class": classes, "top_kernels": [{"name": n[:160], "class": kernel_class(n), "s": t} for n, t in top]}


def flow_agreement(flow: torch.Tensor, reference: torch.Tensor) -> dict:
    """PSNR in dB over the reference's range (max - min; None when identical) and relative L2 error
    ||flow - ref|| / ||ref||."""
    flow, reference = flow.float(), reference.float()
    mse = (flow - reference).pow(2).mean().item()
    peak = (reference.max() - reference.min()).item()
    psnr = None if mse == 0 else 10 * np.log10(peak**2 / mse)  # None: identical (JSON has no infinity)
    return {"flow_psnr_db": psnr, "flow_relative_error": ((flow - reference).norm() / reference.norm()).item()}


def swap_modules(dit: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Put `modules` at their names in the DiT; returns the modules they replaced (to swap back)."""
    previous = {}
    for name, module in modules.items():
        parent_name, _, child = name.rpartition(".")
        parent = dit.get_submodule(parent_name)
        previous[name] = getattr(parent, child)
        setattr(parent, child, module)
    return previous


def fp8_linears(dit: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """FP8 twins of the DiT blocks' big linears, the bf16 originals left as they are (so that variants can be
    swapped in and out: 14 GB for the FP8 copy of the 14B blocks). Refused off an FP8 GPU."""
    check_fp8_support(next(dit.parameters()).device)
    names = [name for name, module in dit.named_modules() if fp8_eligible(name, module)]
    return {name: torchao_fp8_linear(copy.deepcopy(dit.get_submodule(name))) for name in names}


def run_throughput(args, device: torch.device, dtype: torch.dtype, results: dict, add: Callable[[dict], None]) -> None:
    """The issue-14 matrix: DiT variants x decoders at the first resolution (bf16 eager baseline first), the
    fastest DiT variant with TAE at the others, FP8-vs-bf16 flow agreement, a per-kernel-class profile of the
    fastest variant. Every part fails soft: its record carries the error and the run goes on."""
    from iasa.video import compiled_blocks
    from iasa.video.tae import decode_clip, random_tae_decoder

    start = time.perf_counter()
    arch = ARCHITECTURES[args.model_size]
    torch.manual_seed(0)
    dit = build_random("dit", arch, device, dtype)
    pose_guider = build_random("pose_guider", arch, device, dtype)
    vae = build_random("vae", arch, device, dtype)
    tae = random_tae_decoder(arch=TAE_ARCHITECTURES["tiny" if args.model_size == "tiny" else "taew2_1"], device=device, dtype=dtype)
    patch_self_attention(dit)
    motion_generator = make_motion_generator(args.motion, device)
    waveform = speech(VIDEO_FRAMES / 30 + 0.5)
    motion_generator(waveform)
    backend = default_sparse_backends()[0] if args.sparse_backends == ["auto"] else args.sparse_backends[0]
    results["sparse_backends"] = [backend]
    print(f"built {args.model_size} networks in {time.perf_counter() - start:.1f} s", flush=True)

    def over_budget() -> bool:
        return time.perf_counter() - start > args.time_budget_s

    def fail_soft(record: dict, fn: Callable[[], dict]) -> dict:
        if over_budget():
            return {**record, "error": f"skipped: past --time-budget-s {args.time_budget_s}"}
        try:
            return {**record, **fn()}
        except Exception as error:
            traceback.print_exc()
            return {**record, "error": f"{type(error).__name__}: {error}"[:500]}

    fp8_modules: dict[str, torch.nn.Module] = {}  # the FP8 linears, built once

    block_functions: dict[tuple, object] = {}  # variant -> its compiled block function

    def use_variant(precision: str, compiled: bool, bf16_linears: dict):
        """Swap the variant's linears in (bf16_linears: the originals, kept for swapping back) and make its own
        compiled block function the process's (one that fell back to eager must not hide the next variant's
        result; the profile and later resolutions reuse it). Returns that function."""
        swap_modules(dit, bf16_linears)
        if precision == "fp8":
            if not fp8_modules:
                fp8_modules.update(fp8_linears(dit))
            swap_modules(dit, fp8_modules)
        variant = (precision, compiled)
        if variant not in block_functions:
            block_functions[variant] = compiled_blocks.compile_block_function(args.compile_backend)
        compiled_blocks._COMPILED["inductor"] = block_functions[variant]
        return block_functions[variant]

    def add_decoder_records(decoder: str, dit_records: list[dict], outside: dict, latents, baseline) -> None:
        """Time `decoder` on the clip's latents; one record per DiT variant with it, end to end."""

        @torch.no_grad()
        def measure_decoder() -> dict:
            if decoder == "tae":
                decode = lambda: decode_clip(tae, latents)  # noqa: E731
            else:
                model = vae
                if decoder == "wan_compiled":  # on a copy: the eager records keep the eager VAE
                    model = copy.deepcopy(vae)
                    model.model.decoder.compile(backend=args.compile_backend, dynamic=False)
                decode = functools.partial(
                    decode_video, model, latents, _SPEED.vae_memory_format, _SPEED.vae_latent_frames_per_call
                )  # fmt: skip
            first_call_s = synchronized_seconds(decode, device)  # cuDNN autotuning, compilation
            return {"decode_s": timed(decode, 1, device), "decode_first_call_s": first_call_s}

        decoding = fail_soft({}, measure_decoder)
        for record in dit_records:
            combined = {**record, "decoder": decoder, **outside, **decoding}
            errors = [text for text in (record.get("error"), decoding.get("error")) if text]
            if errors:
                combined["error"] = " | ".join(errors)
            else:
                combined["e2e_fps"] = VIDEO_FRAMES / (sum(outside.values()) + record["dit_step_s"] + combined["decode_s"])
                combined["bf16_eager_dit_step_s"] = baseline
                if baseline is not None:
                    combined["dit_speedup_vs_bf16_eager"] = baseline / record["dit_step_s"]
            add(combined)

    bf16_linears = {name: module for name, module in dit.named_modules() if fp8_eligible(name, module)}
    first_clip = None  # (DiT records, costs outside the DiT and decoder, latents, baseline) of the first resolution
    fastest: tuple | None = None
    for index, (height, width) in enumerate(parse_resolution(text) for text in args.resolutions):
        resolution = f"{height}x{width}"
        base = {"resolution": resolution, "steps": 1, "attention": f"iasa-{backend}"}
        try:
            clip = measure_motion_and_pose(motion_generator, waveform, pose_guider, height, width, device, dtype)
            layout_start = time.perf_counter()
            layout = build_sparse_layout(
                clip.keypoints, SparseAttentionConfig(top_k=args.top_k), grid_size=(height // TOKEN_STRIDE, width // TOKEN_STRIDE)
            ).to(device)  # fmt: skip
            prepare_kernel_plan(backend, layout, device)
            synchronize(device)
            layout_s = time.perf_counter() - layout_start
        except Exception as error:
            traceback.print_exc()
            add({**base, "error": f"motion, pose or layout: {type(error).__name__}: {error}"[:500]})
            continue
        outside = {"motion_s": clip.motion_s, "pose_s": clip.pose_s, "layout_s": layout_s}
        latent_grid = (LATENT_FRAMES, height // VAE_STRIDE, width // VAE_STRIDE)
        generator = torch.Generator(device).manual_seed(index)
        with torch.no_grad():
            latents = torch.randn(1, LATENT_CHANNELS, *latent_grid, device=device, dtype=dtype, generator=generator)
            y = torch.randn(1, CONDITION_CHANNELS, *latent_grid, device=device, dtype=dtype, generator=generator)
            context = torch.randn(1, arch.text_length, arch.text_dim, device=device, dtype=dtype, generator=generator)
            clip_feature = torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM, device=device, dtype=dtype, generator=generator)
        conditions = FlowConditions(context, clip_feature, y, clip.pose_features)
        timestep = torch.tensor([1000.0], device=device, dtype=dtype)
        # Later resolutions: the bf16 eager baseline and the fastest variant of the first.
        variants = DIT_VARIANTS if index == 0 else list(dict.fromkeys([BASELINE_VARIANT, *([fastest] if fastest else [])]))
        decoders = FIRST_DECODERS if index == 0 else ("tae",)

        dit_records, flows = [], {}
        for precision, compiled in variants:
            variant = {**base, "precision": precision, "compiled": compiled}

            @torch.no_grad()
            def measure_dit() -> dict:
                block_function = use_variant(precision, compiled, bf16_linears)
                step = lambda: predict_flow(dit, latents, timestep, conditions, layout, backend, compiled=compiled)  # noqa: E731
                first_call_s = synchronized_seconds(step, device)  # compilation of the block, when compiled
                if compiled and block_function.failed:
                    raise RuntimeError(f"compiling the block failed (it would run eagerly): {block_function.error}")
                seconds = statistics.median(synchronized_seconds(step, device) for _ in range(args.repeats))
                flows[precision, compiled] = step()
                return {"dit_step_s": seconds, "dit_first_call_s": first_call_s}

            record = fail_soft(variant, measure_dit)
            # FP8 quality (and the compiler's rounding): this step's flow against the bf16 eager flow.
            reference, flow = flows.get(BASELINE_VARIANT), flows.get((precision, compiled))
            if reference is not None and flow is not None and flow is not reference:
                record["vs_bf16_eager"] = flow_agreement(flow, reference)
                del flows[precision, compiled]
            dit_records.append(record)
        swap_modules(dit, bf16_linears)
        baseline = dit_records[0].get("dit_step_s") if dit_records and variants[0] == BASELINE_VARIANT else None
        timed_records = [r for r in dit_records if "dit_step_s" in r]
        if index == 0 and timed_records:
            best = min(timed_records, key=lambda r: r["dit_step_s"])
            fastest = (best["precision"], best["compiled"])

        for decoder in decoders:
            add_decoder_records(decoder, dit_records, outside, latents, baseline)
        if index == 0:
            first_clip = (dit_records, outside, latents, baseline)
        if index == 0 and fastest is not None:
            precision, compiled = fastest

            @torch.no_grad()
            def profile_fastest() -> dict:
                use_variant(precision, compiled, bf16_linears)
                step = lambda: predict_flow(dit, latents, timestep, conditions, layout, backend, compiled=compiled)  # noqa: E731
                step()
                return step_profile(step, device)

            add(fail_soft({**base, "kind": "profile", "precision": precision, "compiled": compiled}, profile_fastest))
            swap_modules(dit, bf16_linears)
    if first_clip is not None:
        add_decoder_records(LAST_DECODER, *first_clip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", nargs="+", default=list(DEFAULT_RESOLUTIONS), help="HxW, e.g. 480x832")
    parser.add_argument(
        "--sparse-backends", nargs="+", default=["auto"], choices=["auto", "fast", "flex", "reference"],
        help='sparse kernels to time, each against the same dense step; "auto" = fast (when triton imports) and flex',
    )
    parser.add_argument("--top-k", type=int, default=SparseAttentionConfig.top_k, help="frames chosen per frame")
    parser.add_argument("--motion", default="emage", choices=["emage", "procedural"])
    parser.add_argument("--repeats", type=int, default=2, help="timed DiT steps after the warm-up")
    parser.add_argument(
        "--dit-precision", nargs="+", default=["bf16"], choices=list(DIT_PRECISIONS),
        help="DiT linear precisions to time, in this order (fp8 quantises the DiT in place, so put it last)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-size", default="14b", choices=sorted(ARCHITECTURES), help="tiny: a CPU smoke run")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (smoke run with --model-size tiny)")
    parser.add_argument(
        "--throughput", action="store_true",
        help="the throughput matrix instead (issue 14): DiT bf16/fp8 x eager/compiled x decoders wan/wan_compiled/tae "
        "with the first sparse backend, default resolutions 480x832 720x1280",
    )  # fmt: skip
    parser.add_argument("--compile-backend", default="inductor", help='--throughput: torch.compile backend ("aot_eager" in CPU smoke runs)')
    parser.add_argument("--time-budget-s", type=float, default=330.0, help="--throughput: parts not started by then are skipped")
    args = parser.parse_args()
    device = torch.device(args.device)
    # bf16 on the GPU (the benchmark); float32 for CPU smoke runs (CPU bf16 convolutions are slow).
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_pipeline.py needs a CUDA GPU (or --model-size tiny --device cpu for a smoke run)")
    if args.throughput and args.resolutions == list(DEFAULT_RESOLUTIONS):
        args.resolutions = list(THROUGHPUT_RESOLUTIONS)
    resolutions = [parse_resolution(text) for text in args.resolutions]
    backends = default_sparse_backends() if args.sparse_backends == ["auto"] else args.sparse_backends
    sparse_config = SparseAttentionConfig(top_k=args.top_k)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {"gpu": gpu, "torch": torch.__version__, "model_size": args.model_size, "sparse_backends": backends, "records": []}
    memory = PeakMemory(device)

    def add(record: dict) -> None:
        results["records"].append(record)
        write_json(args.out, results)
        print(json.dumps(record), flush=True)

    if args.throughput:
        results["suite"] = "throughput"
        run_throughput(args, device, dtype, results, add)
        print(f"wrote {args.out}")
        return
    arch = ARCHITECTURES[args.model_size]
    start = time.perf_counter()
    torch.manual_seed(0)
    dit = build_random("dit", arch, device, dtype)
    pose_guider = build_random("pose_guider", arch, device, dtype)
    vae = build_random("vae", arch, device, dtype)
    patch_self_attention(dit)
    motion_generator = make_motion_generator(args.motion, device)
    waveform = speech(VIDEO_FRAMES / 30 + 0.5)  # EMAGE may drop a few tail frames; the clip is cut to 81
    motion_generator(waveform)  # warm-up (CUDA kernels, librosa caches)
    print(f"built {args.model_size} DiT, VAE, pose guider and {args.motion} motion in {time.perf_counter() - start:.1f} s", flush=True)

    fixed_costs: dict[str, ClipCosts] = {}  # per resolution, measured in the first precision's pass
    for precision in args.dit_precision:
        if precision == "fp8":
            try:  # refused off FP8 GPUs (the CPU smoke run records that and stops here)
                replaced = quantize_dit_fp8(dit)
                print(f"DiT: {replaced} linears quantised to e4m3", flush=True)
            except Exception as error:
                traceback.print_exc()
                add({"dit_precision": precision, "attention": "error", "error": f"{type(error).__name__}: {error}"[:500]})
                break
        for height, width in resolutions:
            resolution = f"{height}x{width}"
            tokens = LATENT_FRAMES * (height // TOKEN_STRIDE) * (width // TOKEN_STRIDE)
            base = {"resolution": resolution, "dit_precision": precision, "steps": 1, "tokens": tokens}
            try:
                if resolution not in fixed_costs:
                    fixed_costs[resolution] = measure_clip_costs(
                        motion_generator, waveform, pose_guider, vae, arch, height, width, device, dtype, memory
                    )
                costs = fixed_costs[resolution]
                run_dit_records(
                    costs, base, dit, backends, sparse_config, args, arch, height, width, device, dtype,
                    memory, add,
                )  # fmt: skip
            except Exception as error:  # keep going: the records so far are already on disk
                traceback.print_exc()
                add({**base, "attention": "error", "error": f"{type(error).__name__}: {error}"[:500]})
            memory.reset()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
