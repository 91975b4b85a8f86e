"""Real-time factor of EMAGE audio-to-motion inference at the released model size (random weights).

    python scripts/bench_motion.py                  # CUDA when available, else CPU
    python scripts/bench_motion.py --device cpu --threads 2

Random weights run the same compute as the released ones (~139 M parameters, same windows). The
record {"device", "audio_s", "compute_s", "realtime_factor"} (realtime_factor = seconds of audio
per second of compute; > 1 is faster than real time) is merged into benchmarks/results/motion.json,
replacing an earlier record of the same device, so CPU and GPU records live side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.motion.emage_inference import EmageMotionGenerator  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "motion.json"
SAMPLE_RATE = 16000
WARMUP_SECONDS = 4.0


def speech_like_waveform(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a 3 Hz syllable-rate envelope; the network cost does not depend on the content."""
    rng = np.random.default_rng(seed)
    samples = round(seconds * SAMPLE_RATE)
    envelope = 0.5 + 0.5 * np.sin(np.arange(samples) * 2 * np.pi * 3 / SAMPLE_RATE)
    return (rng.standard_normal(samples) * 0.1 * envelope).astype(np.float32)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def merge_record(record: dict, path: Path) -> None:
    """Replace the record of the same device in ``path`` (or add it), writing atomically."""
    records = json.loads(path.read_text())["records"] if path.is_file() else []
    records = [existing for existing in records if existing.get("device") != record["device"]] + [record]
    write_json(path, {"records": records})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--audio-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest is recorded")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = EmageMotionGenerator.random_init(device=device)
    parameters = sum(p.numel() for p in generator.audio_model.parameters())
    print(f"EMAGE audio model: {parameters / 1e6:.1f} M parameters on {device_name(device)}", flush=True)

    waveform = speech_like_waveform(args.audio_seconds)
    generator(waveform[: round(WARMUP_SECONDS * SAMPLE_RATE)])  # kernels, allocator, thread pools
    timings = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        motion = generator(waveform)  # returns numpy arrays, so CUDA work has finished
        timings.append(time.perf_counter() - start)
        print(f"run {repeat + 1}: {motion.num_frames} frames in {timings[-1]:.2f} s", flush=True)

    # The fastest run: on a shared machine the slower ones measure the other jobs, not this model.
    compute_s = min(timings)
    record = {
        "device": device_name(device),
        "audio_s": args.audio_seconds,
        "compute_s": round(compute_s, 4),
        "realtime_factor": round(args.audio_seconds / compute_s, 2),
    }
    merge_record(record, args.output)
    print(json.dumps(record), f"-> {args.output}")


if __name__ == "__main__":
    main()
