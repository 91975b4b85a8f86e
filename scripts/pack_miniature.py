"""Pack the miniature's trained weights (every variant, floats in fp16) and its results into one tar, cut into
parts of at most --part-mib MiB, so that a machine that hands back only a few small files can return them.

    python scripts/pack_miniature.py --runs outputs/miniature --out $OUT [--extra benchmarks/results/miniature.json ...]
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
    stage's LoRA, pose guider, TAE."""
    files = sorted((runs / "teacher" / "model").glob("*.safetensors"))
    files += sorted((runs / "vae_decoder" / "model").glob("*.safetensors"))
    if not files:
        raise InputError(f"no model folder under {runs / 'teacher' / 'model'}; run the teacher stage (config/miniature/teacher.yaml)")
    for stage in STAGES:
        files += sorted((runs / stage).glob("*.safetensors"))
    return files


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("outputs/miniature"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="further files to pack as they are")
    parser.add_argument("--part-mib", type=float, default=15.0)
    args = parser.parse_args(argv)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in shipped_files(args.runs):
            data = fp16_safetensors(path)
            info = tarfile.TarInfo(str(path))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for path in args.extra:
            if path.is_file():
                archive.add(str(path))
    data = buffer.getvalue()
    part = int(args.part_mib * 2**20)
    args.out.mkdir(parents=True, exist_ok=True)
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
