"""Streaming generation on one GPU: first-frame latency, sustained fps and cache memory of the 1-step student.

    python scripts/bench_streaming.py                          # the pruned default grid (about 6 minutes on an H200)
    python scripts/bench_streaming.py --configs 480x832:1:tae:bf16 720x1280:2:wan:fp8 --main-seconds 60
    python scripts/bench_streaming.py --configs 480x832:2:tae:bf16 720x1280:2:tae:bf16 --compiled both
    python scripts/bench_streaming.py --tiny --device cpu      # smoke run: tiny networks at 64x64

Random weights at the real 14B sizes (DiT, pose guider, Wan VAE; TAE at taew2_1's widths), built on the GPU
in bf16; fp8 records come after all bf16 ones (the DiT's linears are then quantised in place,
iasa.video.fp8_linear). A record is resolution:chunk_latent_frames:decoder:precision[:wall cap of a main record,
s]. Each streams synthetic inputs (random pose video through the real pose guider, random layout inputs with a
third of the tokens in regions) through the production path: PoseFeatureStream -> generate_chunk (sparse rule,
flex kernel, bounded cache of StreamingConfig.cache_frames frames) -> StreamDecoder -> uint8 frames on the CPU,
after a warm-up stream of a few chunks (it compiles the flex kernel; keys are padded to a fixed capacity, so one
compile serves the stream).
--compiled on|both: the chunks run the DiT blocks through the one compiled block function as speed.compile_dit
does (iasa.video.compiled_blocks; "both": every config eager, then compiled, side by side); each record says
"compiled" true/false, "warmup_s" (the warm-up stream's wall time: a compiled record's compilation is in it),
"graphs_compiled_warmup" and "graphs_compiled_measured" (graphs torch.compile made during the warm-up and the
measured stream, the flex kernel's and the fused RoPE helpers' included: 0 measured when nothing recompiles)
and, if compiling failed and the blocks fell back to eager, "compile_error".
- first_frame_latency_s: from the first chunk's pose frames being available to its first decoded frame on the
  CPU (pose guider + DiT + decode; the motion stage before is in the README's latency table);
- sustained_fps: frames after the first delivery per wall second (iasa.video.stream_clock) over
  measured_video_s of video at video_fps 30. The first --main records stream --main-seconds (60) of video
  unless they pass their wall cap (the config's fifth field, else --main-wall-cap-s); the others stream
  --short-latent-frames latent frames. A record that streamed less than 60 s of video has
  "sustained_fps_extrapolated": true: its steady-state rate stands for a 60 s stream (once the cache is full,
  from latent frame cache_frames + 1 on, a chunk's work no longer grows);
- peak_mem_gb: peak GPU memory allocated during the stream; cache_mem_gb: the key/value cache at its largest
  (iasa.video.stream_cache: preallocated at the first chunk, chunk area, slots and rotation scratch), with
  cache_mem_gb_first_chunk, cache_mem_gb_when_full (the chunk that filled it) and cache_mem_gb_end (flat: all
  three equal);
Results: benchmarks/results/streaming.json {"gpu", "torch", "records": [...]}, rewritten atomically after every
record; a record that fails (e.g. out of memory) gets an "error" string and the run goes on.

--profile: after each record, one more stream, untimed, fills the cache and runs one chunk under torch.profiler;
its tables (the top ops by their own device time, then by their own CPU time, PROFILE_ROWS each) go to a text
file beside the JSON, named in the record's "profile" (and the chunk's wall time, profiled, in
"profiled_chunk_s").

--slots frame: every cache slot holds a whole frame's tokens, as a live compiled stream sizes them
(iasa.video.stream_run: its poses are not known in advance, and a growing cache would compile again mid-stream);
the default, poses, sizes them to the most region tokens of the stream's frames (stream_slot_tokens). Each record
says "slots".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import atomic_output, write_json  # noqa: E402
from iasa.attention.config import SparseAttentionConfig  # noqa: E402
from iasa.eval.speed import synchronize  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.attention_patch import patch_self_attention  # noqa: E402
from iasa.video.compiled_blocks import compiled_block, reset_compiled_blocks  # noqa: E402
from iasa.video.config import ARCHITECTURES, CLIP_FEATURE_DIM, CLIP_TOKENS, CONDITION_CHANNELS, StreamingConfig  # noqa: E402
from iasa.video.fp8_linear import quantize_dit_fp8  # noqa: E402
from iasa.video.latent_grid import TEMPORAL_STRIDE, TOKEN_STRIDE, VAE_STRIDE  # noqa: E402
from iasa.video.sampler import flow_matching_schedule  # noqa: E402
from iasa.video.stream_clock import StreamClock  # noqa: E402
from iasa.video.stream_decode import StreamDecoder  # noqa: E402
from iasa.video.streaming import (  # noqa: E402
    LatentFramePose, PoseFeatureStream, StreamConditions, StreamState, frame_noise, generate_chunk, stream_slot_tokens,
)  # fmt: skip
from iasa.video.tae import TAE_ARCHITECTURES, random_tae_decoder  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "streaming.json"
VIDEO_FPS = 30.0  # the motion's frame rate (EMAGE and the procedural motion)
SUSTAINED_SECONDS = 60.0
# The pruned default grid: the first MAIN_RECORDS are the main configs (measured over --main-seconds).
# An optional fifth field caps a main record's wall time (s): the Wan VAE records stop early (extrapolated),
# so that the whole default grid takes about 6 minutes of an H200.
DEFAULT_CONFIGS = (
    "480x832:1:tae:bf16:75", "480x832:2:tae:bf16:75", "480x832:1:wan:bf16:25", "480x832:2:wan:bf16:25",
    "720x1280:1:tae:bf16", "720x1280:2:tae:bf16", "480x832:1:tae:fp8",
)  # fmt: skip
MAIN_RECORDS = 4
TINY_CONFIGS = ("64x64:1:tae:bf16", "64x64:2:wan:bf16")
REGION_FRACTION = 1 / 3  # tokens in body regions (face, hands, arms) in a typical upper-body frame
POINTS = 14  # the pose distance's points (12 upper-body + 2 hand centroids)
GIB = 1024**3
PROFILE_ROWS = 25
# --compiled: which block variants every config is measured with, in order.
COMPILE_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}


def parse_config(text: str) -> tuple[tuple[int, int], int, str, str, float | None]:
    try:
        resolution, chunk, decoder, precision, *cap = text.split(":")
        height, width = (int(side) for side in resolution.split("x"))
        chunk = int(chunk)
        cap = float(cap[0]) if cap else None
    except ValueError:
        raise SystemExit(
            f"error: config {text!r} is not HEIGHTxWIDTH:CHUNK:DECODER:PRECISION[:WALL_CAP_S], e.g. 480x832:1:tae:bf16"
        ) from None
    if decoder not in ("tae", "wan") or precision not in ("bf16", "fp8") or height % TOKEN_STRIDE or width % TOKEN_STRIDE:
        raise SystemExit(f"error: config {text!r}: decoder tae|wan, precision bf16|fp8, sides multiples of {TOKEN_STRIDE}")
    return (height, width), chunk, decoder, precision, cap


def synthetic_poses(count: int, grid: tuple[int, int], seed: int) -> list[LatentFramePose]:
    """Random poses around a base pose (so frames differ by realistic amounts) and regions over a third of the
    tokens, in blocks of rows (as body regions are contiguous)."""
    generator = np.random.default_rng(seed)
    base = generator.normal(size=(POINTS, 2))
    tokens = grid[0] * grid[1]
    poses = []
    for latent in range(count):
        video = 1 if latent == 0 else TEMPORAL_STRIDE
        points = base + generator.normal(scale=0.3, size=(video, POINTS, 2))
        regions = torch.zeros(tokens, dtype=torch.long)
        start = int(generator.integers(0, max(1, tokens - int(tokens * REGION_FRACTION))))
        regions[start : start + int(tokens * REGION_FRACTION)] = torch.from_numpy(generator.integers(1, 5, int(tokens * REGION_FRACTION)))
        poses.append(LatentFramePose(points, np.ones((video, POINTS), bool), regions))
    return poses


def profile_tables(run: Callable[[], object], device: torch.device) -> tuple[str, float]:
    """run() under torch.profiler: the tables of its top ops by own device time (CUDA) and own CPU time, and its
    wall seconds (profiled)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        run()
        synchronize(device)
        seconds = time.perf_counter() - started
    averages = profiler.key_averages()
    tables = [] if device.type != "cuda" else [
        "top ops by own device time\n" + averages.table(sort_by="self_device_time_total", row_limit=PROFILE_ROWS)
    ]  # fmt: skip
    tables.append("top ops by own CPU time\n" + averages.table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS))
    return "\n\n".join(tables), seconds


def stream_once(
    parts: dict, size: tuple[int, int], chunk: int, decoder_kind: str, latent_frames: int, wall_cap_s: float | None,
    device, compiled: bool = False, profile_from: int | None = None,
) -> dict:  # fmt: skip
    """Stream `latent_frames` latent frames (or until wall_cap_s); the measurements. compiled: the DiT blocks
    through the compiled block function. profile_from: profile the chunk that starts at this latent frame instead
    (the result then has "profile" tables and "profiled_chunk_s")."""
    dit, guider, dtype = parts["dit"], parts["pose_guider"], parts["dtype"]
    streaming = StreamingConfig(chunk_latent_frames=chunk, cache_frames=parts["cache_frames"])
    rule = SparseAttentionConfig(block_size=parts["block_size"])
    latent_grid = (size[0] // VAE_STRIDE, size[1] // VAE_STRIDE)
    token_grid = (size[0] // TOKEN_STRIDE, size[1] // TOKEN_STRIDE)
    arch = parts["arch"]
    generator = torch.Generator("cpu").manual_seed(0)
    conditions = StreamConditions(
        torch.randn(1, arch.text_length, arch.text_dim, generator=generator).to(device, dtype),
        torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM, generator=generator).to(device, dtype),
        torch.randn(1, CONDITION_CHANNELS, streaming.trained_latent_frames, *latent_grid, generator=generator).to(device, dtype),
    )
    timesteps, sigmas = flow_matching_schedule(1, 5.0)
    timestep, sigma = timesteps[:1].to(device, dtype), float(sigmas[0])
    poses = synthetic_poses(latent_frames, token_grid, seed=1)
    pose_frames = torch.rand(TEMPORAL_STRIDE, 3, *size, generator=generator).to(device, dtype)  # reused groups
    decoder = StreamDecoder(parts["tae"] if decoder_kind == "tae" else parts["vae"], "channels_last_3d")
    features = PoseFeatureStream(guider)
    slot_tokens = token_grid[0] * token_grid[1] if parts["slots"] == "frame" else stream_slot_tokens(poses, rule)
    state, clock, cache = StreamState(slot_tokens=slot_tokens), StreamClock(), {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    features.push(pose_frames[:1])
    features.push(pose_frames)  # video frames 0..4: what latent frame 0 waits for
    clock.mark_inputs_ready()
    streamed = 0
    with torch.no_grad():
        for first in range(0, latent_frames, chunk):
            stop = min(first + chunk, latent_frames)
            while features.ready_latent_frames() < stop:
                features.push(pose_frames)

            def run_chunk() -> tuple[np.ndarray, StreamState]:  # called at once, on this iteration's state
                noise = torch.cat([frame_noise(0, t, latent_grid, device, dtype) for t in range(first, stop)], 2)
                latents, after = generate_chunk(
                    dit, state, noise, timestep, sigma, conditions, features.features(first, stop), poses[first:stop],
                    streaming, rule, parts["backend"], compiled,
                )  # fmt: skip
                return decoder.decode(latents), after  # on the CPU: the frames are out

            if first == profile_from:
                table, seconds = profile_tables(run_chunk, device)
                return {"profile": table, "profiled_chunk_s": seconds}
            frames, state = run_chunk()
            clock.mark_frames(len(frames))
            streamed = stop
            bytes_now = state.cache_bytes()
            cache.setdefault("first_chunk", bytes_now)
            if "when_full" not in cache and len(state.frames) == streaming.cache_frames + 1:
                cache["when_full"] = bytes_now
            cache["max"] = max(cache.get("max", 0), bytes_now)
            if wall_cap_s is not None and time.perf_counter() - started > wall_cap_s:
                break
    synchronize(device)
    measured_frames = 1 + TEMPORAL_STRIDE * (streamed - 1)
    return {
        "first_frame_latency_s": clock.first_frame_latency,
        "sustained_fps": clock.sustained_fps,
        "measured_latent_frames": streamed,
        "measured_video_s": measured_frames / VIDEO_FPS,
        "sustained_fps_extrapolated": measured_frames / VIDEO_FPS < SUSTAINED_SECONDS,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
        "cache_mem_gb": cache["max"] / GIB,
        "cache_mem_gb_first_chunk": cache["first_chunk"] / GIB,
        "cache_mem_gb_when_full": cache["when_full"] / GIB if "when_full" in cache else None,
        "cache_mem_gb_end": state.cache_bytes() / GIB,
        "cached_frames_end": len(state.frames),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=None, help="HEIGHTxWIDTH:CHUNK:DECODER:PRECISION records")
    parser.add_argument("--main", type=int, default=MAIN_RECORDS, help="how many of the first configs are main records")
    parser.add_argument("--main-seconds", type=float, default=SUSTAINED_SECONDS, help="video seconds a main record streams")
    parser.add_argument("--main-wall-cap-s", type=float, default=None, help="stop a main record after this wall time")
    parser.add_argument("--short-latent-frames", type=int, default=32, help="latent frames a non-main record streams")
    parser.add_argument("--warmup-latent-frames", type=int, default=6)
    parser.add_argument("--cache-frames", type=int, default=StreamingConfig.cache_frames, help="past frames cached besides frame 0")
    parser.add_argument("--backend", default="flex", help="sparse kernel of the chunks (flex on CUDA, reference on CPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", action="store_true", help="profile one chunk per record (tables beside --out)")
    parser.add_argument(
        "--compiled", choices=COMPILE_CHOICES, default="off",
        help="run the DiT blocks compiled (on), or every config eager then compiled (both)",
    )  # fmt: skip
    parser.add_argument(
        "--slots", choices=("poses", "frame"), default="poses",
        help="cache slot size: the stream's most region tokens (poses) or a whole frame (frame: a live compiled stream)",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    arch = ARCHITECTURES["tiny" if args.tiny else "14b"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    configs = [parse_config(text) for text in (args.configs or (TINY_CONFIGS if args.tiny else DEFAULT_CONFIGS))]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {"gpu": gpu, "torch": torch.__version__, "video_fps": VIDEO_FPS, "records": []}

    torch.manual_seed(0)
    parts = {
        "arch": arch, "dtype": dtype, "backend": args.backend, "block_size": 128 if not args.tiny else 16,
        "cache_frames": args.cache_frames, "slots": args.slots,
        "dit": build_random("dit", arch, device, dtype), "pose_guider": build_random("pose_guider", arch, device, dtype),
        "vae": build_random("vae", arch, device, dtype),
        "tae": random_tae_decoder(TAE_ARCHITECTURES["tiny" if args.tiny else "taew2_1"], device, dtype),
    }  # fmt: skip
    patch_self_attention(parts["dit"])
    order = sorted(range(len(configs)), key=lambda i: configs[i][3] == "fp8")  # bf16 first, then quantise
    quantised = False
    for index, compiled in ((i, compiled) for i in order for compiled in COMPILE_CHOICES[args.compiled]):
        size, chunk, decoder, precision, cap = configs[index]
        record = {
            "resolution": f"{size[0]}x{size[1]}", "chunk_latent_frames": chunk, "decoder": decoder, "precision": precision,
            "attention": f"iasa-{args.backend}", "cache_frames": args.cache_frames, "compiled": compiled,
            "slots": args.slots,
        }  # fmt: skip
        reset_compiled_blocks()  # each record compiles in its warm-up as in a fresh process
        try:
            if precision == "fp8" and not quantised:
                quantize_dit_fp8(parts["dit"])
                quantised = True
            # Whole chunks only: a short last chunk would have other shapes (another compile inside the timing).
            whole = lambda frames: -(-frames // chunk) * chunk  # noqa: E731
            started, graphs = time.perf_counter(), counters["stats"]["unique_graphs"]
            stream_once(parts, size, chunk, decoder, whole(args.warmup_latent_frames), None, device, compiled)
            record["warmup_s"] = time.perf_counter() - started
            record["graphs_compiled_warmup"] = counters["stats"]["unique_graphs"] - graphs
            main_record = index < args.main
            latent_frames = whole(
                int(np.ceil((args.main_seconds * VIDEO_FPS - 1) / TEMPORAL_STRIDE)) + 1 if main_record else args.short_latent_frames
            )
            graphs = counters["stats"]["unique_graphs"]
            record.update(
                stream_once(parts, size, chunk, decoder, latent_frames, cap or args.main_wall_cap_s if main_record else None, device, compiled)
            )  # fmt: skip
            record["graphs_compiled_measured"] = counters["stats"]["unique_graphs"] - graphs
            if compiled and compiled_block().failed:
                record["compile_error"] = compiled_block().error
            if args.profile:  # a chunk with the cache full (every chunk from then on does the same work)
                full = whole(args.cache_frames + 1)
                profiled = stream_once(parts, size, chunk, decoder, full + chunk, None, device, compiled, profile_from=full)
                variant = "_compiled" if compiled else ""
                path = args.out.with_name(f"{args.out.stem}_profile_{size[0]}x{size[1]}_{chunk}_{decoder}_{precision}{variant}.txt")
                with atomic_output(path) as temporary:
                    temporary.write_text(profiled["profile"] + "\n")
                record.update(profile=path.name, profiled_chunk_s=profiled["profiled_chunk_s"])
        except Exception as error:  # fail soft: the record says why, the run goes on
            record["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results["records"].append(record)
        write_json(args.out, results)
        print({key: value for key, value in record.items()}, flush=True)


if __name__ == "__main__":
    main()
