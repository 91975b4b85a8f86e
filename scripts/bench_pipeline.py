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
- dit_precision: bf16, or fp8 (the DiT blocks' linears in e4m3, iasa.video.fp8_linear); with
  --dit-precision bf16 fp8 all bf16 records come first, then the DiT is quantised in place and the DiT
  steps are timed again (motion, pose and VAE numbers are measured once per resolution and reused);
- e2e_fps: 81 frames / (motion_s + pose_s [+ layout_s] + dit_step_s + vae_decode_s): a 1-step student;
  teacher_e2e_fps: the same with 50 steps at cfg 1.5 (100 DiT passes), computed from the same numbers;
- peak_mem_gb: peak GPU memory allocated during the DiT steps and the pipeline's VAE decode
  (vae_peak_mem_gb: per decode setting).
Text and CLIP embeddings (computed once per clip) are not part of the loop timed here.
Results: benchmarks/results/pipeline.json, rewritten after every record; a failure (e.g. out of memory)
becomes a record with "error" and the run goes on.
"""

from __future__ import annotations

import argparse
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
from iasa.motion.procedural import ProceduralMotionGenerator  # noqa: E402
from iasa.pose import draw_pose_frames, motion_to_keypoints  # noqa: E402
from iasa.pose.style import CHECKPOINT_STYLE  # noqa: E402
from iasa.pose.config import PoseConfig  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.attention_patch import patch_self_attention  # noqa: E402
from iasa.video.denoiser import FlowConditions, predict_flow  # noqa: E402
from iasa.video.fp8_linear import DIT_PRECISIONS, quantize_dit_linears  # noqa: E402
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synchronized_seconds(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


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


def measure_clip_costs(motion_generator, waveform, pose_guider, vae, arch, height, width, device, dtype, memory) -> ClipCosts:
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
        del pose_video
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
    return ClipCosts(keypoints, pose_features, motion_s, motion_parts, pose_s, times, peaks, errors)


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
    args = parser.parse_args()
    device = torch.device(args.device)
    # bf16 on the GPU (the benchmark); float32 for CPU smoke runs (CPU bf16 convolutions are slow).
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_pipeline.py needs a CUDA GPU (or --model-size tiny --device cpu for a smoke run)")
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
            try:  # the CPU smoke run exercises the float32 emulation of the FP8 product
                replaced = quantize_dit_linears(dit, check_device=device.type == "cuda")
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
