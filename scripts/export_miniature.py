"""Pack the miniature's shipped student into models/miniature/ (the embedded default of `make demo`).

    python scripts/export_miniature.py --runs outputs/miniature --dataset data/miniature --out models/miniature
        [--stage dmd_region] [--model_size mini] [--identity person024] [--speech_seconds 4] [--max_bytes 20000000] [--force]

Writes OUT/ (checked to hold at most --max_bytes, 20 MB):
    <the model folder of RUNS/vae_decoder/model> DiT with the student LoRA (RUNS/STAGE/lora.safetensors) merged,
                                               VAE, text encoder; every tensor float16 safetensors
    pose_guider.safetensors                    RUNS/STAGE/pose_guider.safetensors, float16
    reference.png, reference_keypoints.npz     a held-out identity in its rest pose (the dataset's render)
    speech.wav                                 a few seconds of the dataset's speech-like audio
    miniature.json                             where it came from, the identity seed (its ground truth), sizes
then: python scripts/generate.py --config config/miniature.yaml audio=OUT/speech.wav
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.errors import InputError  # noqa: E402
from iasa.eval.miniature import HELD_OUT_SPLIT, MODEL_FOLDER, STAGE_LORA, STAGE_POSE_GUIDER, stage_file  # noqa: E402
from iasa.synthetic.dataset import MANIFEST, SyntheticDatasetError, write_wav  # noqa: E402
from iasa.synthetic.speech import SpeechConfig, synthesize_speech  # noqa: E402
from iasa.video.assembly import load_wan_components  # noqa: E402
from iasa.video.config import WanModelConfig  # noqa: E402
from iasa.video.pack_model import describe_sizes, folder_bytes, pack_model_folder  # noqa: E402

# The budget for the shipped weights and files, in bytes.
MAX_BYTES = 20_000_000
REFERENCE_IMAGE = "reference.png"
REFERENCE_KEYPOINTS = "reference_keypoints.npz"
SPEECH = "speech.wav"
RECORD = "miniature.json"
SPEECH_SEED = 7


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("outputs/miniature"), help="the stage folders of run_miniature.sh")
    parser.add_argument("--dataset", type=Path, default=Path("data/miniature"), help="make_synthetic_dataset.py --out")
    parser.add_argument("--out", type=Path, default=Path("models/miniature"))
    parser.add_argument("--stage", default="dmd_region", help="the stage whose LoRA and pose guider ship")
    parser.add_argument("--model_stage", default="vae_decoder", help="the stage whose model/ folder holds the networks")
    parser.add_argument("--model_size", default="mini", help="the architecture of the model folder (checked by loading it)")
    parser.add_argument("--identity", default=None, help="held-out identity of the reference image; default the first")
    parser.add_argument("--speech_seconds", type=float, default=4.0)
    parser.add_argument("--max_bytes", type=int, default=MAX_BYTES, help="fail when OUT would hold more (default: 20 MB)")
    parser.add_argument("--force", action="store_true", help="replace OUT when it exists")
    return parser.parse_args(argv)


def held_out_identity(dataset: Path, name: str | None) -> tuple[str, dict]:
    manifest = dataset / HELD_OUT_SPLIT / MANIFEST
    if not manifest.is_file():
        raise SyntheticDatasetError(
            f"{manifest} does not exist; write the dataset with scripts/make_synthetic_dataset.py --out {dataset}"
        )
    identities = json.loads(manifest.read_text())["identities"]
    name = name if name is not None else next(iter(identities))
    if name not in identities:
        raise SyntheticDatasetError(f"{manifest} lists no identity '{name}'; choose one of {sorted(identities)}")
    return name, identities[name]


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.out.exists() and not args.force:
        raise InputError(f"{args.out} exists; remove it or pass --force to replace it")
    identity, record = held_out_identity(args.dataset, args.identity)
    sources = {
        "model": stage_file(args.runs, args.model_stage, MODEL_FOLDER),
        "lora": stage_file(args.runs, args.stage, STAGE_LORA),
        "pose_guider": stage_file(args.runs, args.stage, STAGE_POSE_GUIDER),
    }
    staging = args.out.with_name(f".{args.out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files = pack_model_folder(sources["model"], sources["lora"], sources["pose_guider"], staging)
        # The packed folder loads strictly with the real loader (every key of every network).
        packed = WanModelConfig(model_size=args.model_size, model_dir=str(staging), dtype="float32", device="cpu")
        load_wan_components(packed)
        identities = args.dataset / HELD_OUT_SPLIT / "identities"
        for suffix, name in ((".png", REFERENCE_IMAGE), (".npz", REFERENCE_KEYPOINTS)):
            shutil.copyfile(identities / f"{identity}{suffix}", staging / name)
            files.append(staging / name)
        write_wav(staging / SPEECH, synthesize_speech(args.speech_seconds, SPEECH_SEED, SpeechConfig()))
        files.append(staging / SPEECH)
        total = folder_bytes(files)
        if total > args.max_bytes:
            raise InputError(
                f"the packed student takes {total / 1e6:.1f} MB, over the {args.max_bytes / 1e6:g} MB budget "
                f"({describe_sizes(files, staging)}); train a smaller mini model"
            )
        write_json(staging / RECORD, {
            "stage": args.stage, "runs": str(args.runs), "identity": identity, "identity_seed": record["seed"],
            "bytes": total, "files": json.loads(describe_sizes(files, staging)),
        })  # fmt: skip
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as error:  # bad user input: the message names the file or key and the fix
        raise SystemExit(f"error: {error}") from None
