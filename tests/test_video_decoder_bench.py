"""scripts/bench_decoders.py --tiny --device cpu: every decoder setting is timed and recorded, ratios
against the Wan VAE eager baseline of the same run, video shapes Wan's 4 (T - 1) + 1 frames."""

from __future__ import annotations

import json


def test_bench_decoders_smoke_run_records_every_variant(run_script, tmp_path):
    out = tmp_path / "decoders.json"
    run_script("bench_decoders.py", "--tiny", "--device", "cpu", "--resolutions", "32x48", "--latent-frames", "3", "--repeats", "1",
               "--compile-backend", "eager", "--out", out)  # fmt: skip
    results = json.loads(out.read_text())
    assert results["gpu"] == "cpu" and results["video_frames"] == 9 and results["baseline"] == "wan_eager"
    records = {record["variant"]: record for record in results["records"]}
    assert list(records) == [
        "wan_eager", "wan_eager_contiguous", "wan_compiled",
        "tae_whole", "tae_whole_channels_last", "tae_streamed_x1", "tae_streamed_x4",
    ]  # fmt: skip
    assert all("error" not in record for record in records.values()), [r.get("error") for r in records.values()]
    for name, record in records.items():
        assert record["video_shape"] == [1, 3, 9, 32, 48] and record["latent_shape"] == [1, 16, 3, 4, 6]
        assert record["seconds"] > 0 and record["frames_per_s"] == 9 / record["seconds"]
        assert record["speedup_vs_wan_eager"] == records["wan_eager"]["seconds"] / record["seconds"]
        assert ("first_frames_s" in record) == (name not in ("tae_whole", "tae_whole_channels_last"))
    assert records["wan_eager"]["speedup_vs_wan_eager"] == 1.0
