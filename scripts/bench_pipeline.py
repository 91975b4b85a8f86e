"""The whole pose-driven Wan2.1-I2V-14B pipeline on one GPU: dense (cuDNN) vs input-aware sparse attention.

    python scripts/bench_pipeline.py                                   # 512x512, 480x832, 720x1280 x 81 frames
    python scripts/bench_pipeline.py --resolutions 480x832 --sparse-backends flex

Random weights at the real 14B sizes, built directly on the GPU in bf16 (no files needed). Per resolution:
- motion_s: audio (3.2 s of synthetic speech) -> motion (EMAGE at its real size with random weights, or
  procedural) -> keypoints -> pose video, after one warm-up;
- pose_s: the UniAnimate pose guider on the pose video (once per clip);
- sparse kernels: fast and flex by default (flex alone without triton), each with its own records;
- layout_s: the clip's sparse layout (build_sparse_layout on the CPU + the kernel's plan on the GPU);
- dit_step_s: one DiT forward (a 1-step student step at cfg 1), median of --repeats after a warm-up call
  (which pays compilation); dense uses cuDNN SDPA first in the priority list;
- vae_decode_s: Wan VAE decode of the 21 latent frames (untiled), after a warm-up (None with an "error"
  when it runs out of memory; the DiT numbers of that resolution are still recorded);
- e2e_fps: 81 frames / (motion_s + pose_s [+ layout_s] + dit_step_s + vae_decode_s): a 1-step student;
  teacher_e2e_fps: the same with 50 steps at cfg 5 (100 DiT passes), computed from the same numbers;
- peak_mem_gb: peak GPU memory allocated during the DiT steps and the VAE decode.
Text and CLIP embeddings (computed once per clip) are not part of the loop timed here.
Results: benchmarks/results/pipeline.json, rewritten after every record; a failure (e.g. out of memory)
becomes a record with "error" and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.attention import SparseAttentionConfig, build_sparse_layout, density_statistics  # noqa: E402
from iasa.motion.procedural import ProceduralMotionGenerator  # noqa: E402
from iasa.pose import draw_pose_frames, motion_to_keypoints  # noqa: E402
from iasa.pose.config import PoseConfig  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.attention_patch import patch_self_attention  # noqa: E402
from iasa.video.backbone import WanPoseBackbone  # noqa: E402
from iasa.video.config import (  # noqa: E402
    ARCHITECTURES,
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    TOKEN_STRIDE,
    VAE_STRIDE,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "pipeline.json"
VIDEO_FRAMES, LATENT_FRAMES, SAMPLE_RATE = 81, 21, 16000
TEACHER_DIT_PASSES = 100  # 50 steps x 2 (cfg)
DEFAULT_RESOLUTIONS = ("512x512", "480x832", "720x1280")


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


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(suffix=".json", dir=path.parent, prefix=f".{path.stem}-")
    with os.fdopen(descriptor, "w") as handle:
        json.dump(results, handle, indent=2)
    os.replace(temporary, path)


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
        write_results(args.out, results)
        print(json.dumps(record), flush=True)

    arch = ARCHITECTURES[args.model_size]
    start = time.perf_counter()
    torch.manual_seed(0)
    dit = build_random("dit", arch, device, dtype)
    pose_nets = build_random("pose_nets", arch, device, dtype)
    vae = build_random("vae", arch, device, dtype)
    backbone = WanPoseBackbone(dit, pose_nets)
    motion_generator = make_motion_generator(args.motion, device)
    waveform = speech(VIDEO_FRAMES / 30 + 0.5)  # EMAGE may drop a few tail frames; the clip is cut to 81
    motion_generator(waveform)  # warm-up (CUDA kernels, librosa caches)
    print(f"built {args.model_size} DiT, VAE, pose nets and {args.motion} motion in {time.perf_counter() - start:.1f} s", flush=True)

    for height, width in resolutions:
        resolution = f"{height}x{width}"
        base = {"resolution": resolution, "steps": 1, "tokens": LATENT_FRAMES * (height // TOKEN_STRIDE) * (width // TOKEN_STRIDE)}
        try:
            def motion_to_pose_video():
                motion = motion_generator(waveform)
                keypoints = motion_to_keypoints(motion, PoseConfig(image_height=height, image_width=width))
                keypoints = keypoints.slice_frames(0, VIDEO_FRAMES)
                return keypoints, draw_pose_frames(keypoints)

            motion_start = time.perf_counter()
            keypoints, pose_frames = motion_to_pose_video()
            motion_s = time.perf_counter() - motion_start
            if keypoints.num_frames != VIDEO_FRAMES:
                raise RuntimeError(f"motion gave {keypoints.num_frames} frames, expected {VIDEO_FRAMES}")

            with torch.no_grad():
                pose_video = torch.from_numpy(pose_frames).to(device, dtype).permute(3, 0, 1, 2)[None] / 255.0
                pose_s = timed(lambda: pose_nets.pose_features(pose_video), 1, device)
                pose_features = pose_nets.pose_features(pose_video)
                del pose_video
                latent_h, latent_w = height // VAE_STRIDE, width // VAE_STRIDE
                latents = torch.randn(1, LATENT_CHANNELS, LATENT_FRAMES, latent_h, latent_w, device=device, dtype=dtype)
                y = torch.randn(1, CONDITION_CHANNELS, LATENT_FRAMES, latent_h, latent_w, device=device, dtype=dtype)
                context = torch.randn(1, arch.text_length, arch.text_dim, device=device, dtype=dtype)
                clip_feature = torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM, device=device, dtype=dtype)
                timestep = torch.tensor([1000.0], device=device, dtype=dtype)

                memory.reset()
                vae_error = None
                try:
                    vae_decode_s = timed(lambda: vae.decode(latents, device=device), 1, device)
                except torch.OutOfMemoryError as error:  # the DiT numbers are still worth recording
                    vae_decode_s, vae_error = None, f"VAE decode: {error}"[:300]
                vae_peak = memory.gib()
                memory.reset()

                def record_for(attention: str, layout, layout_s: float) -> dict:
                    memory.reset()
                    step = lambda: backbone.conditioned_flow(latents, timestep, context, clip_feature, y, pose_features, layout)  # noqa: E731
                    dit_step_s = timed(step, args.repeats, device)
                    peak = max(memory.gib(), vae_peak) if vae_peak is not None else None
                    record = {
                        **base, "attention": attention, "dit_step_s": dit_step_s, "vae_decode_s": vae_decode_s,
                        "motion_s": motion_s, "pose_s": pose_s, "layout_s": layout_s, "e2e_fps": None,
                        "teacher_e2e_fps": None, "peak_mem_gb": peak,
                    }  # fmt: skip
                    if vae_decode_s is None:
                        return {**record, "error": vae_error}
                    fixed = motion_s + pose_s + layout_s + vae_decode_s
                    record["e2e_fps"] = VIDEO_FRAMES / (fixed + dit_step_s)
                    record["teacher_e2e_fps"] = VIDEO_FRAMES / (fixed + TEACHER_DIT_PASSES * dit_step_s)
                    return record

                dense = record_for("dense", None, 0.0)
                add(dense)
                grid = (height // TOKEN_STRIDE, width // TOKEN_STRIDE)
                for backend in backends:
                    try:  # one failing kernel must not cost the other's numbers
                        patch_self_attention(dit, backend)
                        layout_start = time.perf_counter()
                        layout = build_sparse_layout(keypoints, sparse_config, grid_size=grid).to(device)
                        prepare_kernel_plan(backend, layout, device)
                        synchronize(device)
                        layout_s = time.perf_counter() - layout_start
                        sparse = record_for(f"iasa-{backend}", layout, layout_s)
                        density = density_statistics(layout.to("cpu"))["token_density"]
                        speedup = dense["dit_step_s"] / sparse["dit_step_s"]
                        add({**sparse, "top_k": args.top_k, "density": density, "speedup_vs_dense": speedup})
                    except Exception as error:
                        traceback.print_exc()
                        add({**base, "attention": f"iasa-{backend}", "error": f"{type(error).__name__}: {error}"[:500]})
                    memory.reset()
        except Exception as error:  # keep going: the records so far are already on disk
            traceback.print_exc()
            add({**base, "attention": "error", "error": f"{type(error).__name__}: {error}"[:500]})
        memory.reset()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
