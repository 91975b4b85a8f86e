"""scripts/bench_multi_gpu.py on CPU processes over gloo: a tiny model with 1 and 2 processes writes every
record of the issue's schema, speedups and fps following from the times; later runs replace their own records."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_multi_gpu.py"
SCHEMA = {"gpus", "resolution", "attention", "dit_step_s", "speedup_vs_1gpu", "e2e_fps", "decoder"}


def bench_module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_multi_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").is_file(), reason="torchrun not installed next to python")
def test_bench_multi_gpu_smoke_run_writes_the_schema(run_script, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The launcher (the script without torchrun's variables) in this process; it torchruns the script once per count."""
    out = tmp_path / "multi_gpu.json"
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_script("bench_multi_gpu.py", "--model-size", "tiny", "--device", "cpu", "--gpus", "1", "2", "--resolutions", "48x48",
               "--motion", "procedural", "--sparse-backend", "reference", "--repeats", "1", "--out", out)  # fmt: skip
    results = json.loads(out.read_text())
    assert results["gpu"] == "cpu" and "torch" in results
    records = results["records"]
    assert all(SCHEMA <= record.keys() for record in records)
    keys = sorted((r["gpus"], r["attention"], r["decoder"]) for r in records)
    assert keys == sorted((g, a, d) for g in (1, 2) for a in ("dense", "iasa") for d in ("wan", "tae"))
    by_key = {(r["gpus"], r["attention"], r["decoder"]): r for r in records}
    for (gpus, attention, decoder), record in by_key.items():
        one = by_key[(1, attention, decoder)]
        assert record["speedup_vs_1gpu"] == pytest.approx(one["dit_step_s"] / record["dit_step_s"])
        stages = record["motion_s"] + record["pose_s"] + record["layout_s"] + record["dit_step_s"] + record["decode_s"]
        assert record["e2e_fps"] == pytest.approx(81 / stages)
        assert (record["layout_s"] > 0) == (attention == "iasa") and record["tokens"] == 21 * 3 * 3  # 48 / 8 (VAE) / 2 (patch)


def test_a_later_run_replaces_its_own_records_and_keeps_the_others(tmp_path: Path) -> None:
    merged_results = bench_module().merged_results
    path = tmp_path / "multi_gpu.json"

    def record(gpus: int, dit_step_s: float, attention: str = "dense") -> dict:
        return {"gpus": gpus, "resolution": "480x832", "attention": attention, "decoder": "wan", "dit_step_s": dit_step_s}

    path.write_text(json.dumps(merged_results(path, "H200", [record(1, 8.0), record(4, 2.5), record(1, 4.0, "iasa")])))
    assert [r["speedup_vs_1gpu"] for r in json.loads(path.read_text())["records"]] == [1.0, 3.2, 1.0]
    results = merged_results(path, "H200", [record(4, 2.0), record(2, 3.0, "iasa")])
    assert [(r["attention"], r["gpus"], r["dit_step_s"], r["speedup_vs_1gpu"]) for r in results["records"]] == [
        ("dense", 1, 8.0, 1.0), ("dense", 4, 2.0, 4.0), ("iasa", 1, 4.0, 1.0), ("iasa", 2, 3.0, 4.0 / 3.0),
    ]  # fmt: skip
    assert merged_results(tmp_path / "none.json", "H200", [record(2, 3.0)])["records"][0]["speedup_vs_1gpu"] is None
