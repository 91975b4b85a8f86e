"""scripts/bench_pipeline.py runs its whole loop on a tiny CPU model and writes every record's keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"resolution", "attention", "steps", "dit_step_s", "vae_decode_s", "motion_s", "e2e_fps", "peak_mem_gb"}


def test_bench_pipeline_smoke_run_writes_records(tmp_path):
    out = tmp_path / "pipeline.json"
    command = [
        sys.executable, str(ROOT / "scripts" / "bench_pipeline.py"), "--model-size", "tiny", "--device", "cpu",
        "--motion", "procedural", "--resolutions", "64x64", "--sparse-backends", "reference", "flex", "--repeats", "1",
        "--out", str(out),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["gpu"] == "cpu" and "torch" in results
    dense, sparse, flex = results["records"]
    assert KEYS <= dense.keys() and KEYS <= sparse.keys() and KEYS <= flex.keys()
    assert [r["attention"] for r in results["records"]] == ["dense", "iasa-reference", "iasa-flex"]
    assert dense["steps"] == sparse["steps"] == 1 and dense["e2e_fps"] > 0 and 0 < sparse["density"] < 1
    # e2e frames per second follow from the stage times (81 frames, 1 DiT step).
    stages = dense["motion_s"] + dense["pose_s"] + dense["dit_step_s"] + dense["vae_decode_s"]
    assert abs(dense["e2e_fps"] - 81 / stages) < 1e-6 * dense["e2e_fps"]
