"""The miniature Table 2: every variant on the held-out split of the synthetic dataset, against the ground truth.

    python scripts/eval_miniature.py --config config/miniature/eval.yaml dataset=data/miniature \
        runs=outputs/miniature out=benchmarks/results/miniature.json \
        grid=benchmarks/results/miniature_grid.png device=cuda

Writes `out` (miniature.json: "gpu", "torch", "cpu", "dataset", "rows" [{variant, steps, attention, density,
psnr, ssim, face_psnr, mouth_psnr, hand_psnr, lip_sync, flicker, fps_gpu, fps_cpu}], and on CUDA
"fp8_vs_bf16" / "tae_vs_vae" for the student; "baselines": the reference frame held still and the ground truth
through the VAE) and `grid` (the ground truth above each variant, a few frames). --baselines-only writes only the
baselines to `out` (no variant generated, no grid).
Any key of iasa.eval.miniature.MiniatureEvalConfig can be set as key=value (e.g. max_clips=4 cpu_clips=0).
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
from iasa.eval.miniature import MiniatureEvalConfig, run_baselines, run_evaluation  # noqa: E402


def main(argv: list[str]) -> None:
    overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (see config/miniature/eval.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--baselines-only", action="store_true", help="only the baseline rows, to out")
    args = parser.parse_args(rest)
    config = load_config(MiniatureEvalConfig, args.config, overrides)
    if args.baselines_only:
        for row in run_baselines(config, progress=not args.no_progress)["baselines"]:
            print(f"{row['baseline']:<24} psnr {row['psnr']} dB  ssim {row['ssim']}")
        print(f"wrote {config.out}")
        return
    payload = run_evaluation(config, progress=not args.no_progress)
    for row in payload["rows"]:
        speed = f"fps_gpu {row['fps_gpu']}  fps_cpu {row['fps_cpu']}"
        print(f"{row['variant']:<24} psnr {row['psnr']} dB  ssim {row['ssim']}  {speed}")
    print(f"wrote {config.out} and {config.grid}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as error:  # bad user input: the message names the file or key and the fix
        raise SystemExit(f"error: {error}") from None
