"""scripts/bench_pipeline.py --dit-precision bf16 fp8: fp8 records follow the bf16 ones in the same run
(tiny CPU model, FP8 product emulated), with the VAE decode variants recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_pipeline_adds_fp8_records_after_bf16(tmp_path):
    out = tmp_path / "pipeline.json"
    command = [
        sys.executable, str(ROOT / "scripts" / "bench_pipeline.py"), "--model-size", "tiny", "--device", "cpu",
        "--motion", "procedural", "--resolutions", "64x64", "--sparse-backends", "reference", "--repeats", "1",
        "--dit-precision", "bf16", "fp8", "--out", str(out),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    assert [(r["dit_precision"], r["attention"]) for r in records] == [
        ("bf16", "dense"), ("bf16", "iasa-reference"), ("fp8", "dense"), ("fp8", "iasa-reference"),
    ]  # fmt: skip
    assert all("error" not in r for r in records)
    bf16, fp8 = records[0], records[2]
    # Motion, pose and VAE are measured once per resolution and shared by both precisions.
    for key in ("motion_s", "pose_s", "vae_decode_s", "vae_decode_diffsynth_s", "vae_decode_variants"):
        assert bf16[key] == fp8[key]
    assert set(bf16["vae_decode_variants"]) == {"contiguous x1", "contiguous x21", "contiguous x4", "channels_last_3d x8"}
    ours = {"channels_last_3d x4": bf16["vae_decode_s"], **bf16["vae_decode_variants"]}
    assert all(seconds > 0 for seconds in ours.values()) and bf16["vae_decode_diffsynth_s"] > 0
    fastest = min(ours.values())
    assert ours[bf16["vae_decode_best"]] == fastest
    stages = bf16["motion_s"] + bf16["pose_s"] + bf16["layout_s"] + bf16["dit_step_s"]
    assert abs(bf16["e2e_fps_best"] - 81 / (stages + fastest)) < 1e-9 * bf16["e2e_fps_best"]
    assert abs(bf16["e2e_fps"] - 81 / (stages + bf16["vae_decode_s"])) < 1e-9 * bf16["e2e_fps"]
