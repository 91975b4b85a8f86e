"""Print benchmarks/results/miniature.json (scripts/eval_miniature.py) as the Markdown table of the README.

    python scripts/miniature_table.py [benchmarks/results/miniature.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path("benchmarks/results/miniature.json")
# (key in a row, column title, format of its value); a null value prints as "-".
COLUMNS = (
    ("variant", "variant", "{}"), ("steps", "steps", "{}"), ("attention", "attention", "{}"),
    ("density", "density", "{:.2f}"), ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
    ("face_psnr", "face PSNR", "{:.2f}"), ("mouth_psnr", "mouth PSNR", "{:.2f}"), ("hand_psnr", "hand PSNR", "{:.2f}"),
    ("lip_sync", "lip sync", "{:.3f}"), ("flicker", "flicker", "{:.2f}"), ("fps_gpu", "fps GPU", "{:.1f}"),
    ("fps_cpu", "fps CPU", "{:.2f}"),
)  # fmt: skip


def cell(value: object, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def markdown_table(payload: dict) -> str:
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    # The baselines (a still frame, the VAE round trip) have no steps, attention or speed: "-" there.
    baselines = [{**row, "variant": f"baseline: {row['baseline']}"} for row in payload.get("baselines", [])]
    for row in payload["rows"] + baselines:
        lines.append("| " + " | ".join(cell(row.get(key), pattern) for key, _, pattern in COLUMNS) + " |")
    cpu = payload.get("cpu", {})
    lines.append("")
    lines.append(
        f"GPU: {payload.get('gpu') or 'none'}; CPU: {cpu.get('name', '?')}, {cpu.get('threads', '?')} threads; "
        f"torch {payload.get('torch', '?')}; {payload.get('dataset', {}).get('clips', '?')} held-out clips."
    )
    for key, title in (("fp8_vs_bf16", "FP8 vs bf16 student"), ("tae_vs_vae", "TAE vs VAE decode of the student")):
        if key in payload:
            extra = payload[key]
            lines.append(f"{title}: PSNR {cell(extra.get('psnr'), '{:.2f}')} dB, SSIM {cell(extra.get('ssim'), '{:.3f}')}, "
                         f"{cell(extra.get('fps_gpu'), '{:.1f}')} fps on the GPU.")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; write it with scripts/eval_miniature.py")
    print(markdown_table(json.loads(path.read_text())))


if __name__ == "__main__":
    main(sys.argv[1:])
