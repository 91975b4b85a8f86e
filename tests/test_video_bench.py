"""scripts/bench_pipeline.py runs its whole loop on a tiny CPU model and writes every record's keys."""

from __future__ import annotations

import json

KEYS = {"resolution", "attention", "steps", "dit_step_s", "vae_decode_s", "motion_s", "e2e_fps", "peak_mem_gb"}


def test_bench_pipeline_smoke_run_writes_records(run_script, tmp_path):
    out = tmp_path / "pipeline.json"
    # 48 x 48: 3 x 3 tokens a frame, enough for the layout's region links (at 32 x 32 each frame keeps its own
    # tokens only); decoding the 81 frames is most of the run, so no larger.
    run_script("bench_pipeline.py", "--model-size", "tiny", "--device", "cpu", "--motion", "procedural", "--resolutions", "48x48",
               "--sparse-backends", "reference", "flex", "--repeats", "1", "--out", out)  # fmt: skip
    results = json.loads(out.read_text())
    assert results["gpu"] == "cpu" and "torch" in results
    dense, sparse, flex = results["records"]
    assert KEYS <= dense.keys() and KEYS <= sparse.keys() and KEYS <= flex.keys()
    assert [r["attention"] for r in results["records"]] == ["dense", "iasa-reference", "iasa-flex"]
    assert dense["steps"] == sparse["steps"] == 1 and dense["e2e_fps"] > 0 and 0 < sparse["density"] < 1
    # e2e frames per second follow from the stage times (81 frames, 1 DiT step).
    stages = dense["motion_s"] + dense["pose_s"] + dense["dit_step_s"] + dense["vae_decode_s"]
    assert abs(dense["e2e_fps"] - 81 / stages) < 1e-6 * dense["e2e_fps"]
