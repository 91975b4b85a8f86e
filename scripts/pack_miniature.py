"""Pack the miniature's trained weights (every variant, floats in fp16) and its results into one tar, cut into
parts of at most --part-mib MiB, so that a machine that hands back only a few small files can return them.

    python scripts/pack_miniature.py --runs outputs/miniature --out $OUT [--extra benchmarks/results/miniature.json ...]
        [--checkpoints vae ...]
--checkpoints: each named stage's newest complete checkpoint too, its files as they are (the optimiser's moments
exact), so that a later command on another machine resumes that stage where it stopped (a VAE trained over
several commands). Without a teacher yet (a command that trained the VAE alone) only the checkpoints are packed.
Unpack: cat miniature.tar.part-* > miniature.tar && tar xf miniature.tar   (gives outputs/miniature/...)
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.errors import InputError  # noqa: E402
from iasa.train.checkpoint import complete_checkpoints  # noqa: E402

STAGES = ("teacher", "lora_global", "lora_global_local", "dmd", "dmd_region", "tae")


def fp16_safetensors(path: Path) -> bytes:
    """The file's bytes with every floating tensor in fp16 (metadata kept)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    tensors = {key: value.half() if value.is_floating_point() else value for key, value in tensors.items()}
    return save(tensors, metadata=metadata)


def shipped_files(runs: Path) -> list[Path]:
    """The weights inference reads: the teacher's model folder (and the vae_decoder stage's, when it ran) and every
    stage's LoRA, pose guider, TAE; none before the teacher stage has run."""
    files = sorted((runs / "teacher" / "model").glob("*.safetensors"))
    files += sorted((runs / "vae_decoder" / "model").glob("*.safetensors"))
    if not files:
        return []
    for stage in STAGES:
        files += sorted((runs / stage).glob("*.safetensors"))
    return files


def checkpoint_files(runs: Path, stages: list[str]) -> list[Path]:
    """Every file of each stage's newest complete checkpoint (runs/<stage>/checkpoints/step-*/)."""
    files = []
    for stage in stages:
        found = complete_checkpoints(runs / stage)
        if not found:
            raise InputError(f"--checkpoints {stage}: no complete checkpoint under {runs / stage / 'checkpoints'}; "
                             f"train that stage first (config/miniature/{stage}.yaml) or leave it out")  # fmt: skip
        files += sorted(path for path in found[-1].iterdir() if path.is_file())
    return files


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("outputs/miniature"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="further files to pack as they are")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="stages whose newest checkpoint to pack as it is")
    parser.add_argument("--part-mib", type=float, default=15.0)
    args = parser.parse_args(argv)
    weights, checkpoints = shipped_files(args.runs), checkpoint_files(args.runs, args.checkpoints)
    if not weights and not checkpoints:
        raise InputError(f"no model folder under {args.runs / 'teacher' / 'model'}; run the teacher stage "
                         "(config/miniature/teacher.yaml), or name a stage with --checkpoints")  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in weights:
            data = fp16_safetensors(path)
            info = tarfile.TarInfo(str(path))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for path in checkpoints:
            archive.add(str(path))
        for path in args.extra:
            if path.is_file():
                archive.add(str(path))
    data = buffer.getvalue()
    part = int(args.part_mib * 2**20)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("miniature.tar.part-*"):  # an earlier pack's parts would join this one's on unpacking
        stale.unlink()
    written = []
    for index in range(0, max(len(data), 1), part):
        target = args.out / f"miniature.tar.part-{index // part:02d}"
        target.write_bytes(data[index : index + part])
        written.append(target)
    print(f"packed {len(data) / 2**20:.1f} MiB into {len(written)} parts under {args.out}")
    return written


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
