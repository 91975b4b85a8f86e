"""Wan2.1-I2V-14B across GPUs: the DiT sequence-parallel (Ulysses over heads), dense and input-aware sparse.

    python scripts/bench_multi_gpu.py                       # torchrun with 1, 2, 4, 8 GPUs (those present), in turn
    python scripts/bench_multi_gpu.py --gpus 1 4 --resolutions 720x1280
    torchrun --nproc_per_node 4 scripts/bench_multi_gpu.py  # one GPU count (what the line above runs)

Random weights at the real 14B sizes, built on every GPU in bf16 (no files needed). Per GPU count, resolution
and attention (dense: cuDNN SDPA; iasa: the sparse kernel, --sparse-backend):
- dit_step_s: one DiT forward (a 1-step student step at cfg 1) through `predict_flow(..., parallel=...)`, the
  same sequence-parallel path as `torchrun scripts/generate.py`: median of --repeats after a warm-up call, the
  slowest rank's; speedup_vs_1gpu: the 1-GPU record's dit_step_s over this one's (null until a 1-GPU record of
  the same resolution and attention is in the file);
- decoder: "wan" (the Wan VAE with the pipeline's decode_video settings) or "tae" (random TAE weights):
  decode_s of the 21 latent frames on rank 0, which decodes alone in generation (iasa.video.pipeline says
  why); the other ranks wait;
- e2e_fps: 81 frames / (motion_s + pose_s [+ layout_s] + dit_step_s + decode_s): motion (procedural or
  EMAGE with random weights) -> keypoints -> pose video, the pose guider, and the sparse layout are rank 0's
  work, measured on rank 0; text and CLIP embeddings (once per clip) are not part of it.
Results: benchmarks/results/multi_gpu.json {"gpu", "torch", "records": [{"gpus", "resolution", "attention",
"dit_step_s", "speedup_vs_1gpu", "e2e_fps", "decoder", ...}]}; each run replaces its own (gpus, resolution,
attention, decoder) records and keeps the others, so GPU counts can be run one at a time.

The engine: yunchang (long-context-attention), the all-to-all under xDiT/xfuser's Ulysses attention, used for
its communication only (iasa.parallel.ulysses). Its primitive `SeqAllToAll4D` composes with the sparse
kernels: after it every GPU holds all tokens of 40 / N heads, so the clip's block-sparse layout and the
fast/flex kernels run unchanged. yunchang's and xfuser's attention layers do not: they pick the kernel from a
fixed list (flash-attn, SDPA, sage) with no place for a per-clip layout, and their ring half splits the keys
over GPUs, which a sparse kernel with one softmax over each query's allowed keys cannot take. xfuser would
also bring diffusers, distvae, flash-attn and its own global parallel state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline import make_motion_generator, parse_resolution, prepare_kernel_plan, speech  # noqa: E402

from iasa.atomic_io import write_json  # noqa: E402
from iasa.attention import SparseAttentionConfig, SparseLayout, build_sparse_layout  # noqa: E402
from iasa.eval.speed import synchronize  # noqa: E402
from iasa.parallel import ParallelConfig, ParallelGroup, broadcast_dataclass, collective, parallel_group  # noqa: E402
from iasa.parallel.ulysses import check_head_split  # noqa: E402
from iasa.pose import draw_pose_frames, motion_to_keypoints  # noqa: E402
from iasa.pose.config import PoseConfig  # noqa: E402
from iasa.pose.style import CHECKPOINT_STYLE  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.attention_patch import patch_self_attention  # noqa: E402
from iasa.video.config import (  # noqa: E402
    ARCHITECTURES,
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    InferenceSpeedConfig,
)
from iasa.video.denoiser import FlowConditions, predict_flow  # noqa: E402
from iasa.video.latent_grid import TOKEN_STRIDE, VAE_STRIDE  # noqa: E402
from iasa.video.tae import CLIP_DECODERS, decode_clip, random_tae_decoder  # noqa: E402
from iasa.video.vae_decode import decode_video  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "multi_gpu.json"
VIDEO_FRAMES, LATENT_FRAMES = 81, 21
DEFAULT_GPUS = (1, 2, 4, 8)
DEFAULT_RESOLUTIONS = ("480x832", "720x1280")
RECORD_KEY = ("gpus", "resolution", "attention", "decoder")


def timed_on_every_rank(fn: Callable[[], object], repeats: int, parallel: ParallelGroup) -> float:
    """Median seconds of `repeats` calls after a warm-up, each started together (a barrier) on every rank;
    the slowest rank's median."""
    fn()
    seconds = []
    for _ in range(repeats):
        if parallel.group is not None:
            with collective(parallel, "the barrier before a timed step"):
                dist.barrier(group=parallel.group)
        synchronize(parallel.device)
        start = time.perf_counter()
        fn()
        synchronize(parallel.device)
        seconds.append(time.perf_counter() - start)
    slowest = torch.tensor([statistics.median(seconds)], dtype=torch.float64, device=parallel.device)
    if parallel.group is not None:
        with collective(parallel, "collecting the step times"):
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=parallel.group)
    return float(slowest.item())


def barrier(parallel: ParallelGroup, what: str) -> None:
    if parallel.group is not None:
        with collective(parallel, what):
            dist.barrier(group=parallel.group)


def merged_results(path: Path, gpu: str, records: list[dict]) -> dict:
    """The file's records with this run's replacing those of the same key, sorted; speedup_vs_1gpu of every
    record recomputed from the 1-GPU records present."""
    kept = []
    if path.is_file():
        previous = json.loads(path.read_text())
        new_keys = {tuple(record[key] for key in RECORD_KEY) for record in records}
        kept = [record for record in previous.get("records", []) if tuple(record.get(k) for k in RECORD_KEY) not in new_keys]
    merged = sorted(kept + records, key=lambda r: (r["resolution"], r["attention"], r["decoder"], r["gpus"]))
    one_gpu = {(r["resolution"], r["attention"]): r["dit_step_s"] for r in merged if r["gpus"] == 1}
    for record in merged:
        reference = one_gpu.get((record["resolution"], record["attention"]))
        record["speedup_vs_1gpu"] = reference / record["dit_step_s"] if reference and record.get("dit_step_s") else None
    return {"gpu": gpu, "torch": torch.__version__, "records": merged}


def run_benchmark(args: argparse.Namespace) -> None:
    """One torchrun launch: every GPU count's records for the resolutions asked."""
    arch = ARCHITECTURES[args.model_size]
    with parallel_group(ParallelConfig(collective_timeout_s=args.collective_timeout), args.device) as parallel:
        check_head_split(arch.num_heads, parallel.world_size)
        device, main = parallel.device, parallel.is_main
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # CPU smoke runs: float32
        start = time.perf_counter()
        # The same seed everywhere: equal weights on every rank (the timing does not depend on their values).
        torch.manual_seed(0)
        dit = build_random("dit", arch, device, dtype)
        patch_self_attention(dit)
        if main:
            pose_guider = build_random("pose_guider", arch, device, dtype)
            speed, vae, tae = InferenceSpeedConfig(), build_random("vae", arch, device, dtype), random_tae_decoder(device=device, dtype=dtype)
            decode = {  # the pipeline's decode settings (iasa.video.pipeline.VideoGenerator.decode)
                "wan": lambda latents: decode_video(vae, latents, speed.vae_memory_format, speed.vae_latent_frames_per_call),
                "tae": lambda latents: decode_clip(tae, latents, speed.vae_latent_frames_per_call),
            }
            motion_generator = make_motion_generator(args.motion, device)
            waveform = speech(VIDEO_FRAMES / 30 + 0.5)  # EMAGE may drop a few tail frames; the clip is cut to 81
            motion_generator(waveform)  # warm-up
            print(f"built the {args.model_size} model on {parallel.world_size} processes in {time.perf_counter() - start:.1f} s", flush=True)
        sparse_config = SparseAttentionConfig(top_k=args.top_k)
        records = []
        for height, width in (parse_resolution(text) for text in args.resolutions):
            resolution = f"{height}x{width}"
            latent_h, latent_w, grid = height // VAE_STRIDE, width // VAE_STRIDE, (height // TOKEN_STRIDE, width // TOKEN_STRIDE)
            layout, costs = None, {}
            if main:  # rank 0's work in generation: motion -> pose video, pose guider, layout
                motion_start = time.perf_counter()
                keypoints = motion_to_keypoints(motion_generator(waveform), PoseConfig(image_height=height, image_width=width))
                keypoints = keypoints.slice_frames(0, VIDEO_FRAMES)
                pose_frames = draw_pose_frames(keypoints, CHECKPOINT_STYLE)
                costs["motion_s"] = time.perf_counter() - motion_start
                with torch.no_grad():
                    pose_video = torch.from_numpy(pose_frames).to(device, dtype).permute(3, 0, 1, 2)[None] / 255.0
                    synchronize(device)
                    pose_start = time.perf_counter()
                    pose_guider.pose_features(pose_video)
                    synchronize(device)
                    costs["pose_s"] = time.perf_counter() - pose_start
                    del pose_video
                layout_start = time.perf_counter()
                layout = build_sparse_layout(keypoints, sparse_config, grid_size=grid)
                costs["layout_s"] = time.perf_counter() - layout_start
            layout = broadcast_dataclass(layout, SparseLayout, parallel).to(device)
            prepare_kernel_plan(args.sparse_backend, layout, device)
            generator = torch.Generator(device).manual_seed(1)  # the same conditions on every rank

            def random(*shape: int) -> torch.Tensor:
                return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

            with torch.no_grad():
                latents = random(1, LATENT_CHANNELS, LATENT_FRAMES, latent_h, latent_w)
                conditions = FlowConditions(
                    random(1, arch.text_length, arch.text_dim), random(1, CLIP_TOKENS, CLIP_FEATURE_DIM),
                    random(1, CONDITION_CHANNELS, LATENT_FRAMES, latent_h, latent_w),
                    random(1, arch.dim, LATENT_FRAMES, *grid),
                )  # fmt: skip
                timestep = torch.tensor([1000.0], device=device, dtype=dtype)
                steps = {}
                for attention in args.attention:
                    step_layout = layout if attention == "iasa" else None

                    def step() -> torch.Tensor:
                        return predict_flow(dit, latents, timestep, conditions, step_layout, args.sparse_backend, parallel=parallel)

                    steps[attention] = timed_on_every_rank(step, args.repeats, parallel)
                decode_s = {}
                if main:
                    for name in args.decoders:
                        decode[name](latents)  # warm-up (cuDNN autotuning)
                        synchronize(device)
                        decode_start = time.perf_counter()
                        decode[name](latents)
                        synchronize(device)
                        decode_s[name] = time.perf_counter() - decode_start
                barrier(parallel, "waiting for rank 0's decode")
            del latents, conditions
            if not main:
                continue
            for attention, dit_step_s in steps.items():
                outside = costs["motion_s"] + costs["pose_s"] + (costs["layout_s"] if attention == "iasa" else 0.0)
                for name, seconds in decode_s.items():
                    record = {
                        "gpus": parallel.world_size, "resolution": resolution, "attention": attention,
                        "dit_step_s": dit_step_s, "speedup_vs_1gpu": None,
                        "e2e_fps": VIDEO_FRAMES / (outside + dit_step_s + seconds), "decoder": name,
                        "decode_s": seconds, **costs, "layout_s": costs["layout_s"] if attention == "iasa" else 0.0,
                        "sparse_backend": args.sparse_backend if attention == "iasa" else None, "motion": args.motion,
                        "tokens": LATENT_FRAMES * grid[0] * grid[1], "model_size": args.model_size,
                    }  # fmt: skip
                    records.append(record)
                    print(json.dumps(record), flush=True)
            gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            write_json(args.out, merged_results(args.out, gpu, records))  # after every resolution
        if main:
            print(f"wrote {args.out}")


def launch_each_count(args: argparse.Namespace, argv: list[str]) -> None:
    """torchrun this script once per GPU count, in turn (a failed count is reported and the next one runs)."""
    counts = args.gpus
    if args.device == "cuda":
        available = torch.cuda.device_count()
        counts = [n for n in counts if n <= available]
        skipped = sorted(set(args.gpus) - set(counts))
        if skipped:
            print(f"bench_multi_gpu.py: {available} GPU(s) here, skipping --gpus {skipped}", flush=True)
        if not counts:
            sys.exit(f"bench_multi_gpu.py: this machine has {available} GPU(s), none of --gpus {args.gpus} fits")
    torchrun = Path(sys.executable).with_name("torchrun")
    failed = []
    for count in counts:
        print(f"=== {count} process(es) ===", flush=True)
        # The same arguments: under torchrun (WORLD_SIZE set) the script benchmarks and ignores --gpus.
        command = [str(torchrun), "--standalone", "--nproc_per_node", str(count), __file__, *argv]
        if subprocess.run(command).returncode != 0:
            failed.append(count)
    if failed:
        sys.exit(f"bench_multi_gpu.py: the runs with {failed} processes failed (their logs are above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, nargs="+", default=list(DEFAULT_GPUS), help="GPU counts to launch in turn")
    parser.add_argument("--resolutions", nargs="+", default=list(DEFAULT_RESOLUTIONS), help="HxW, e.g. 480x832")
    parser.add_argument("--attention", nargs="+", default=["dense", "iasa"], choices=["dense", "iasa"])
    parser.add_argument("--sparse-backend", default="fast", choices=["fast", "flex", "reference"])
    parser.add_argument("--decoders", nargs="+", default=list(CLIP_DECODERS), choices=list(CLIP_DECODERS))
    parser.add_argument("--top-k", type=int, default=SparseAttentionConfig.top_k, help="frames chosen per frame")
    parser.add_argument("--motion", default="emage", choices=["emage", "procedural"])
    parser.add_argument("--repeats", type=int, default=3, help="timed DiT steps after the warm-up")
    parser.add_argument("--collective-timeout", type=float, default=ParallelConfig.collective_timeout_s)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-size", default="14b", choices=sorted(ARCHITECTURES), help="tiny: a CPU smoke run")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: gloo smoke run (--model-size tiny)")
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_multi_gpu.py needs CUDA GPUs (or --model-size tiny --device cpu for a smoke run)")
    if "WORLD_SIZE" in os.environ:
        run_benchmark(args)
    else:
        launch_each_count(args, argv)


if __name__ == "__main__":
    main()
