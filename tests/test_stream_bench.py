"""scripts/bench_streaming.py at tiny size on the CPU: every record has the issue's keys, the cache is flat from
the first chunk, short runs say their fps is extrapolated, and a failing record keeps its error and the run goes on."""

from __future__ import annotations

import json

import pytest

KEYS = {
    "resolution", "chunk_latent_frames", "decoder", "precision", "first_frame_latency_s", "sustained_fps",
    "peak_mem_gb", "cache_mem_gb",
}  # fmt: skip


@pytest.fixture
def run_bench(run_script):
    """scripts/bench_streaming.py's tiny CPU run with `extra` arguments, in this process; its results file."""

    def run(out, *extra: str) -> dict:
        run_script("bench_streaming.py", "--tiny", "--device", "cpu", "--backend", "reference", "--out", out,
                   "--short-latent-frames", "7", "--warmup-latent-frames", "2", "--cache-frames", "2", "--main", "0", *extra)  # fmt: skip
        return json.loads(out.read_text())

    return run


def test_bench_streaming_records_latency_fps_and_a_flat_cache(run_bench, tmp_path):
    results = run_bench(tmp_path / "streaming.json", "--configs", "64x64:1:tae:bf16", "64x64:2:wan:bf16")
    assert results["gpu"] == "cpu" and "torch" in results
    assert len(results["records"]) == 2
    for record in results["records"]:
        assert KEYS <= record.keys(), record
        assert record["first_frame_latency_s"] > 0 and record["sustained_fps"] > 0
        assert record["measured_latent_frames"] == (7 if record["chunk_latent_frames"] == 1 else 8) and record["sustained_fps_extrapolated"] is True
        # frame 0 + 2 cached frames: full from latent frame 3 on, and flat after
        assert record["cached_frames_end"] == 3
        # preallocated by the first chunk (iasa.video.stream_cache): the same from then to the end
        assert record["cache_mem_gb_when_full"] == record["cache_mem_gb_end"] == record["cache_mem_gb"] > 0
        assert record["cache_mem_gb_first_chunk"] == record["cache_mem_gb_end"]


def test_a_failing_record_keeps_its_error_and_the_run_goes_on(run_bench, tmp_path):
    out = tmp_path / "streaming.json"
    results = run_bench(out, "--configs", "64x64:1:tae:bf16", "64x64:1:tae:bf16", "--backend", "fast")
    assert [("error" in r) for r in results["records"]] == [True, True]
    assert "flex" in results["records"][0]["error"]  # the fast kernels run full clips only


def test_profile_writes_a_table_of_one_full_cache_chunk_beside_the_results(run_bench, tmp_path):
    out = tmp_path / "streaming.json"
    results = run_bench(out, "--configs", "64x64:1:tae:bf16", "--profile")
    record = results["records"][0]
    assert record["profile"] == "streaming_profile_64x64_1_tae_bf16.txt" and record["profiled_chunk_s"] > 0
    table = (tmp_path / record["profile"]).read_text()
    assert table.startswith("top ops by own CPU time") and "Self CPU time total" in table
    assert "aten::" in table  # the ops of the chunk, by name


def test_compiled_both_measures_every_config_eager_then_compiled(run_bench, tmp_path):
    """--compiled both: each config twice, eager then through the compiled block function (Inductor on the CPU);
    the compiled record compiled during its warm-up only and did not fall back to eager."""
    results = run_bench(tmp_path / "streaming.json", "--configs", "64x64:2:tae:bf16", "--compiled", "both")
    eager, compiled = results["records"]
    assert (eager["compiled"], compiled["compiled"]) == (False, True)
    assert {key: eager[key] for key in ("resolution", "chunk_latent_frames", "decoder", "precision")} == {
        key: compiled[key] for key in ("resolution", "chunk_latent_frames", "decoder", "precision")
    }
    for record in (eager, compiled):
        assert "error" not in record and "compile_error" not in record, record
        assert KEYS <= record.keys() and record["sustained_fps"] > 0 and record["warmup_s"] > 0
        assert record["graphs_compiled_measured"] == 0
        assert record["cache_mem_gb_when_full"] == record["cache_mem_gb_end"] == record["cache_mem_gb"] > 0
    # the compiled record's warm-up compiled the block (the eager one, on the CPU with the reference kernel: nothing)
    assert (eager["graphs_compiled_warmup"], compiled["graphs_compiled_warmup"]) == (0, 1)


def test_whole_frame_slots_cache_more_than_pose_sized_slots_and_stay_flat(run_bench, tmp_path):
    """--slots frame (a live compiled stream's cache): every slot a whole frame, so more memory than slots sized to
    the stream's region tokens (a third of the tokens here), and as flat."""
    config = ("--configs", "64x64:1:tae:bf16")
    poses = run_bench(tmp_path / "poses.json", *config)["records"][0]
    frame = run_bench(tmp_path / "frame.json", *config, "--slots", "frame")["records"][0]
    assert (poses["slots"], frame["slots"]) == ("poses", "frame")
    assert frame["cache_mem_gb"] > poses["cache_mem_gb"]
    assert frame["cache_mem_gb_first_chunk"] == frame["cache_mem_gb_end"] == frame["cache_mem_gb"]
