"""Clip decoders on one GPU: the Wan VAE (eager, and compiled) vs the tiny TAE (whole clip, and streamed).

    python scripts/bench_decoders.py                                  # 81 frames at 480x832 and 720x1280
    python scripts/bench_decoders.py --resolutions 720x1280 --variants wan_eager tae_whole
    python scripts/bench_decoders.py --tiny --device cpu              # smoke run: tiny networks at 64x64

Random weights at the real sizes (the Wan 2.1 VAE, base width 96; the TAE at taew2_1's widths 256/128/64/64),
built on the device in bf16 (float32 on the CPU): no model files needed. Latents (1, 16, 21, H/8, W/8) ->
81 frames. Variants (--variants):
- wan_eager: iasa.video.vae_decode.decode_video at InferenceSpeedConfig's defaults (the pipeline's decode,
  channels_last_3d, 4 latent frames per call): the baseline of every ratio;
- wan_eager_contiguous: the same in contiguous memory format;
- wan_compiled: wan_eager with the VAE decoder under torch.compile (--compile-backend, dynamic=False; the
  warm-up decode compiles a graph per distinct state of the causal caches, first_call_s holds that cost);
- tae_whole: iasa.video.tae.decode_clip, all 21 latent frames in one call;
- tae_whole_channels_last: the same with the weights in channels_last (NHWC cuDNN kernels);
- tae_streamed_x1 / tae_streamed_x4: decode_step, 1 or 4 latent frames per step (4 or 16 frames out each).
Per resolution and variant: seconds (median of --repeats decodes after a warm-up decode), first_call_s (the
warm-up, with compilation), frames_per_s (81 / seconds), first_frames_s (streamed decoders: latent frame 0
in -> frame 0 out, from a fresh state, median; the Wan VAE streams too, so its variants have it),
peak_gib (GPU memory allocated during the timed decodes), speedup_vs_wan_eager (wan_eager seconds / these,
same run). Results: benchmarks/results/decoders.json, rewritten after every record; a failure (e.g. out of
memory) becomes a record with "error" and the run goes on.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import traceback
from pathlib import Path
from typing import Callable

import torch

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.eval.speed import synchronized_seconds  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.config import ARCHITECTURES, LATENT_CHANNELS, InferenceSpeedConfig  # noqa: E402
from iasa.video.latent_grid import VAE_STRIDE  # noqa: E402
from iasa.video.tae import TAE_ARCHITECTURES, TaeDecoderState, decode_clip, decode_step, random_tae_decoder  # noqa: E402
from iasa.video.vae_decode import WanDecoderState, decode_video, wan_decode_step  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "decoders.json"
DEFAULT_RESOLUTIONS = ("480x832", "720x1280")
TINY_RESOLUTIONS = ("64x64",)
LATENT_FRAMES = 21  # 81 video frames
BASELINE = "wan_eager"
VARIANTS = (
    "wan_eager", "wan_eager_contiguous", "wan_compiled",
    "tae_whole", "tae_whole_channels_last", "tae_streamed_x1", "tae_streamed_x4",
)  # fmt: skip
SPEED = InferenceSpeedConfig()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def parse_resolution(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    if height % VAE_STRIDE or width % VAE_STRIDE:
        raise argparse.ArgumentTypeError(f"{text}: height and width must be multiples of {VAE_STRIDE}")
    return height, width


def wan_decoders(vae, compile_backend: str) -> dict[str, tuple[Callable, Callable]]:
    """name -> (whole decode, first step) for the Wan VAE variants; the compiled one on its own copy."""
    compiled = copy.deepcopy(vae)
    compiled.model.decoder.compile(backend=compile_backend, dynamic=False)

    def variant(model, memory_format: str) -> tuple[Callable, Callable]:
        whole = lambda z: decode_video(model, z, memory_format, SPEED.vae_latent_frames_per_call)  # noqa: E731
        first = lambda z: wan_decode_step(model, z[:, :, :1], WanDecoderState(), memory_format)  # noqa: E731
        return whole, first

    return {
        "wan_eager": variant(vae, SPEED.vae_memory_format),
        "wan_eager_contiguous": variant(vae, "contiguous"),
        "wan_compiled": variant(compiled, SPEED.vae_memory_format),
    }


def tae_decoders(tae) -> dict[str, tuple[Callable, Callable | None]]:
    channels_last = copy.deepcopy(tae).to(memory_format=torch.channels_last)
    first = lambda z: decode_step(tae, z[:, :, :1], TaeDecoderState())  # noqa: E731
    return {
        "tae_whole": (lambda z: decode_clip(tae, z), None),
        "tae_whole_channels_last": (lambda z: decode_clip(channels_last, z), None),
        "tae_streamed_x1": (lambda z: decode_clip(tae, z, 1), first),
        "tae_streamed_x4": (lambda z: decode_clip(tae, z, 4), first),
    }


def measure(whole: Callable, first: Callable | None, latents: torch.Tensor, repeats: int, device) -> dict:
    """Times of one decoder setting: `whole` decodes the clip, `first` (streamed ones) its first step."""
    shape = []
    with torch.inference_mode():
        # The warm-up pays cuDNN autotuning and compilation.
        first_call_s = synchronized_seconds(lambda: shape.extend(whole(latents).shape), device)
        reset_peak(device)
        seconds = statistics.median(synchronized_seconds(lambda: whole(latents), device) for _ in range(repeats))
        record = {"seconds": seconds, "first_call_s": first_call_s, "peak_gib": peak_gib(device), "video_shape": shape}
        if first is not None:
            first(latents)  # warm-up of the one-frame shapes
            record["first_frames_s"] = statistics.median(synchronized_seconds(lambda: first(latents), device) for _ in range(repeats))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", nargs="+", default=None, help="HxW, e.g. 480x832 (default: 480x832 720x1280; --tiny: 64x64)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--latent-frames", type=int, default=LATENT_FRAMES, help="21 = 81 video frames")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes after the warm-up")
    parser.add_argument("--compile-backend", default="inductor", help='torch.compile backend of wan_compiled ("eager" in smoke runs)')
    parser.add_argument("--tiny", action="store_true", help="tiny Wan VAE and TAE (CPU smoke runs)")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (smoke run with --tiny)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_decoders.py needs a CUDA GPU (or --tiny --device cpu for a smoke run)")
    # bf16 on the GPU (the benchmark); float32 for CPU smoke runs (CPU bf16 convolutions are slow).
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    resolutions = [parse_resolution(text) for text in args.resolutions or (TINY_RESOLUTIONS if args.tiny else DEFAULT_RESOLUTIONS)]
    wan_size, tae_size = ("tiny", "tiny") if args.tiny else ("14b", "taew2_1")
    results = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."), "wan_vae": f"{wan_size} (base width {ARCHITECTURES[wan_size].vae_base_dim})",
        "tae": f"{tae_size} {TAE_ARCHITECTURES[tae_size].decoder_channels}", "latent_frames": args.latent_frames,
        "video_frames": 4 * (args.latent_frames - 1) + 1, "baseline": BASELINE, "records": [],
    }  # fmt: skip

    def add(record: dict) -> None:
        results["records"].append(record)
        write_json(args.out, results)
        print(json.dumps(record), flush=True)

    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES[wan_size], device, dtype)
    tae = random_tae_decoder(TAE_ARCHITECTURES[tae_size], device, dtype)
    decoders = {**wan_decoders(vae, args.compile_backend), **tae_decoders(tae)}
    for height, width in resolutions:
        latents = torch.randn(1, LATENT_CHANNELS, args.latent_frames, height // VAE_STRIDE, width // VAE_STRIDE, device=device, dtype=dtype)
        base = {"resolution": f"{height}x{width}", "latent_shape": list(latents.shape)}
        baseline_s = None
        for name in [BASELINE] + [v for v in args.variants if v != BASELINE]:  # the baseline first: ratios
            try:
                record = {**base, "variant": name, **measure(*decoders[name], latents, args.repeats, device)}
                record["frames_per_s"] = record["video_shape"][2] / record["seconds"]
                if name == BASELINE:
                    baseline_s = record["seconds"]
                record["speedup_vs_wan_eager"] = baseline_s / record["seconds"] if baseline_s is not None else None
            except Exception as error:  # e.g. out of memory, a compiler failure: the other numbers still count
                traceback.print_exc()
                record = {**base, "variant": name, "error": f"{type(error).__name__}: {error}"[:500]}
            add(record)
            reset_peak(device)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
