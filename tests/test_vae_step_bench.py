"""scripts/bench_vae_step.py on the CPU: every (memory format, shape) is timed as the pretrain_vae step and recorded,
its pixel rate against the first record of the same run; a malformed shape is refused."""

from __future__ import annotations

import json

import pytest


def test_bench_vae_step_records_every_format_and_shape(run_script, tmp_path):
    out = tmp_path / "vae_step.json"
    run_script("bench_vae_step.py", "--shapes", "2x32x5", "1x32x9", "--memory-formats", "contiguous", "channels_last_3d",
               "--model-size", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "1", "--out", out)  # fmt: skip
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["model_size"] == "tiny"
    records = results["records"]
    assert [(r["memory_format"], r["batch"], r["crop"], r["frames"]) for r in records] == [
        ("contiguous", 2, 32, 5), ("contiguous", 1, 32, 9), ("channels_last_3d", 2, 32, 5), ("channels_last_3d", 1, 32, 9),
    ]  # fmt: skip
    assert all("error" not in record for record in records), [r.get("error") for r in records]
    for record in records:
        pixels = record["batch"] * record["crop"] ** 2 * record["frames"]
        assert record["pixels_per_s"] == pytest.approx(pixels / record["seconds_per_step"])
        assert record["pixels_vs_baseline"] == pytest.approx(record["pixels_per_s"] / records[0]["pixels_per_s"])
    assert records[0]["pixels_vs_baseline"] == 1.0


@pytest.mark.parametrize("shape", ["24x128", "24x120x5", "24x128x6"])
def test_bench_vae_step_refuses_a_malformed_shape(run_script, shape, capsys):
    with pytest.raises(SystemExit):
        run_script("bench_vae_step.py", "--shapes", shape, "--device", "cpu", "--model-size", "tiny")
    assert shape in capsys.readouterr().err
