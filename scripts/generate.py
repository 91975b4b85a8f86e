"""Speech + reference image -> talking, gesturing video (mp4 with the speech).

    python scripts/generate.py --config config/infer_iasa.yaml audio=speech.wav image=person.png out=out.mp4
    torchrun --nproc_per_node 4 scripts/generate.py ...   (the DiT sequence-parallel over 4 GPUs; 1, 2, 4, 5
                                                          or 8 for the 14B model's 40 heads)

Any config key can be overridden as key=value (e.g. sampler.num_steps=4 attention.attention=dense).
--smoke runs a tiny random model on the CPU with no model files (seconds; checks the whole path; the
reference pose comes from reference_keypoints=... when given, else the skeleton keeps the default framing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Model files are local; never reach for the network (diffsynth, huggingface).
os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.errors import InputError  # noqa: E402
from iasa.config import load_config, split_config_args  # noqa: E402
from iasa.video.inference import SMOKE_MODEL_OVERRIDES  # noqa: E402
from iasa.video.inference import InferenceConfig, run_inference  # noqa: E402

# --smoke: the shared tiny CPU model, two sampler steps.
SMOKE_OVERRIDES = [*SMOKE_MODEL_OVERRIDES, "sampler.num_steps=2"]


def main(argv: list[str]) -> None:
    overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (see config/infer_iasa.yaml)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model on the CPU, no model files")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(rest)
    if args.smoke:
        overrides = SMOKE_OVERRIDES + overrides
    config = load_config(InferenceConfig, args.config, overrides)
    timer = run_inference(config, progress=not args.no_progress)
    if timer is not None:  # rank 0 (the only process of a plain run) writes the video and reports
        print(timer.summary())
        print(f"wrote {config.out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as error:  # bad user input: the message names the file or key and the fix
        raise SystemExit(f"error: {error}") from None
