"""scripts/bench_pipeline.py --dit-precision bf16 fp8 on the tiny CPU model: the bf16 records with the VAE
decode variants, then fp8's refusal off an FP8 GPU recorded as an error (the run still succeeds; on an FP8
GPU the fp8 records follow, sharing the motion, pose and VAE numbers)."""

from __future__ import annotations

import json


def test_bench_pipeline_records_bf16_then_fp8s_refusal(run_script, tmp_path):
    out = tmp_path / "pipeline.json"
    # 32 x 32: the five timed decodes of the 81 frames are most of the run.
    run_script("bench_pipeline.py", "--model-size", "tiny", "--device", "cpu", "--motion", "procedural", "--resolutions", "32x32",
               "--sparse-backends", "reference", "--repeats", "1", "--dit-precision", "bf16", "fp8", "--out", out)  # fmt: skip
    records = json.loads(out.read_text())["records"]
    assert [(r["dit_precision"], r["attention"]) for r in records] == [("bf16", "dense"), ("bf16", "iasa-reference"), ("fp8", "error")]
    assert all("error" not in r for r in records[:2])
    assert "compute capability >= 8.9" in records[2]["error"] and "use bf16" in records[2]["error"]
    bf16 = records[0]
    assert set(bf16["vae_decode_variants"]) == {"contiguous x1", "contiguous x21", "contiguous x4", "channels_last_3d x8"}
    ours = {"channels_last_3d x4": bf16["vae_decode_s"], **bf16["vae_decode_variants"]}
    assert all(seconds > 0 for seconds in ours.values()) and bf16["vae_decode_diffsynth_s"] > 0
    fastest = min(ours.values())
    assert ours[bf16["vae_decode_best"]] == fastest
    stages = bf16["motion_s"] + bf16["pose_s"] + bf16["layout_s"] + bf16["dit_step_s"]
    assert abs(bf16["e2e_fps_best"] - 81 / (stages + fastest)) < 1e-9 * bf16["e2e_fps_best"]
    assert abs(bf16["e2e_fps"] - 81 / (stages + bf16["vae_decode_s"])) < 1e-9 * bf16["e2e_fps"]
