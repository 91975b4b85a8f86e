"""Speech + reference image -> a video streamed while it is generated (the 1-step causal student, chunk by chunk).

    python scripts/stream.py --config config/stream_iasa.yaml audio=speech.wav image=person.png out=out.mp4
    python scripts/stream.py --config config/stream_iasa.yaml audio=speech.wav image=person.png --serve

Frames are written as they are decoded (the mp4 is finalised with the speech at the end); the first-frame latency
and the sustained fps are printed. With speed.compile_dit: true a throwaway warm-up stream compiles the DiT blocks
first (its duration is printed; the latency is measured after it, as a server that warmed up would see). --serve
also shows the frames, with the speech, on a loopback web page (preview_port), once the warm-up is done.
--smoke: the tiny random model on the CPU, no model files. Any key can be overridden as key=value.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.config import load_config, split_config_args  # noqa: E402
from iasa.errors import InputError  # noqa: E402
from iasa.video.inference import SMOKE_MODEL_OVERRIDES  # noqa: E402
from iasa.video.stream_run import StreamInferenceConfig, run_stream  # noqa: E402

# --smoke: the shared tiny CPU model, decoded by a random TAE (the streaming decoder without a file).
SMOKE_OVERRIDES = [*SMOKE_MODEL_OVERRIDES, "speed.decoder=tae", "speed.tae_checkpoint=null"]


def main(argv: list[str]) -> None:
    overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (see config/stream_iasa.yaml)")
    parser.add_argument("--serve", action="store_true", help="show the stream on a loopback web page")
    parser.add_argument("--smoke", action="store_true", help="tiny random model on the CPU, no model files")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(rest)
    if args.smoke:
        overrides = SMOKE_OVERRIDES + overrides
    config = load_config(StreamInferenceConfig, args.config, overrides)
    report = run_stream(config, serve=args.serve, progress=not args.no_progress)
    latency = "n/a" if report.first_frame_latency_s is None else f"{report.first_frame_latency_s:.3f} s"
    if report.warmup_s is not None:
        latency += " (after the warm-up)"
    sustained = "n/a" if report.sustained_fps is None else f"{report.sustained_fps:.1f} fps"
    print(f"first-frame latency {latency}; sustained {sustained} (video {report.video_fps:g} fps, {report.frames} frames)")
    print(f"wrote {config.out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
