"""The miniature VAE's training step (the pretrain_vae task's) at several batch shapes, side by side in one run:
which shape trains the most pixels a second (config/miniature/vae.yaml's data.batch_size, crop, num_frames).

    python scripts/bench_vae_step.py                                   # GPU, bf16 autocast, the grid below
    python scripts/bench_vae_step.py --shapes 24x128x5 96x128x5 --device cpu --model-size tiny --steps 2

A shape is BATCHxCROPxFRAMES; --memory-formats contiguous channels_last_3d times each shape in both (every 3D
convolution's weights and the clips in that layout: NDHWC cuDNN kernels). Random weights at --model-size (no
files); every step is the task's: the causal encode and decode of a random batch
(iasa.train.vae_pretrain.reconstruction_loss), backward, AdamW. Per shape:
seconds per step (median of --steps after --warmup untimed), samples_per_s, pixels_per_s (batch x crop^2 x
frames / seconds), peak_gib, and pixels_vs_baseline (pixels_per_s over the first record's, same run). Results:
benchmarks/results/vae_step.json, rewritten after every shape; a shape that fails (e.g. out of memory) becomes a
record with "error".
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import traceback
from pathlib import Path

import torch

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.eval.speed import synchronized_seconds  # noqa: E402
from iasa.train.config import VaeLossConfig  # noqa: E402
from iasa.train.vae_pretrain import move_vae_scale, reconstruction_loss  # noqa: E402
from iasa.video.assembly import build_random  # noqa: E402
from iasa.video.config import ARCHITECTURES  # noqa: E402
from iasa.video.vae_decode import MEMORY_LAYOUTS, VAE_PARTS, set_conv_memory_format  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "vae_step.json"
# The shipped recipe first (the baseline), then more samples, larger crops and longer clips.
DEFAULT_SHAPES = ("24x128x5", "48x128x5", "96x128x5", "24x256x5", "48x256x5", "12x256x13", "24x256x13")


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        batch, crop, frames = (int(value) for value in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: write a shape as BATCHxCROPxFRAMES, e.g. 24x128x5") from None
    if crop % 16 or (frames - 1) % 4:
        raise argparse.ArgumentTypeError(f"{text}: the crop must be a multiple of 16 and frames 1 + 4k (5, 9, 13, ...)")
    return batch, crop, frames


def time_shape(
    vae, shape: tuple[int, int, int], memory_format: torch.memory_format, steps: int, warmup: int, device: torch.device
) -> dict:
    """The task's step on random clips of `shape` in `memory_format` (the VAE already in it), timed."""
    batch, crop, frames = shape
    optimizer = torch.optim.AdamW(vae.model.parameters(), lr=1e-4)
    loss = VaeLossConfig()
    clips = (torch.rand(batch, 3, frames, crop, crop, device=device) * 2 - 1).contiguous(memory_format=memory_format)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = reconstruction_loss(vae, clips, loss)
        losses["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = statistics.median(synchronized_seconds(step, device) for _ in range(steps))
    pixels = batch * crop * crop * frames
    return {
        "seconds_per_step": seconds,
        "samples_per_s": batch / seconds,
        "pixels_per_s": pixels / seconds,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES])
    parser.add_argument("--memory-formats", nargs="+", choices=sorted(MEMORY_LAYOUTS), default=["contiguous"])
    parser.add_argument("--model-size", default="mini", choices=sorted(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES[args.model_size], device, torch.float32)
    move_vae_scale(vae, device)
    vae.model.train().requires_grad_(True)

    result = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "device": device.type,
        "model_size": args.model_size,
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "steps": args.steps,
        "records": [],
    }
    baseline = None
    for format_name, shape in itertools.product(args.memory_formats, args.shapes):
        record = dict(zip(("batch", "crop", "frames"), shape)) | {"memory_format": format_name}
        set_conv_memory_format(vae, format_name, parts=VAE_PARTS)
        try:
            record |= time_shape(vae, shape, MEMORY_LAYOUTS[format_name], args.steps, args.warmup, device)
            baseline = baseline or record["pixels_per_s"]
            record["pixels_vs_baseline"] = record["pixels_per_s"] / baseline
            print(f"{format_name} {shape}: {record['seconds_per_step'] * 1e3:.1f} ms/step, x{record['pixels_vs_baseline']:.2f} pixels/s", flush=True)
        except Exception as error:  # noqa: BLE001 - a failed shape is a record, the grid goes on
            record["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result["records"].append(record)
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
