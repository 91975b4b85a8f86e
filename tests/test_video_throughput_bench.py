"""scripts/bench_pipeline.py --throughput on the tiny model (CPU, aot_eager compiler): every DiT variant with
every decoder, the bf16 eager baseline in the same run, FP8-vs-bf16 flow agreement, the kernel-class profile,
and a variant that fails (FP8 off an FP8 GPU) recorded without stopping the run."""

from __future__ import annotations

import json

VARIANTS = [("bf16", False), ("fp8", True), ("bf16", True)]


def test_throughput_matrix_on_cpu(run_script, tmp_path):
    out = tmp_path / "pipeline.json"
    run_script("bench_pipeline.py", "--throughput", "--model-size", "tiny", "--device", "cpu", "--motion", "procedural",
               "--resolutions", "32x32", "32x48", "--sparse-backends", "reference", "--repeats", "1", "--compile-backend",
               "aot_eager", "--out", out)  # fmt: skip
    results = json.loads(out.read_text())
    assert results["suite"] == "throughput"
    records = results["records"]
    timed = [r for r in records if r.get("kind") != "profile"]
    key = lambda r: (r["resolution"], r["decoder"], r["precision"], r["compiled"])  # noqa: E731
    timed_first = [r for r in timed if r["resolution"] == "32x32" and "dit_step_s" in r]
    best = min(timed_first, key=lambda r: r["dit_step_s"])
    fastest = (best["precision"], best["compiled"])
    expected = [("32x32", decoder, *variant) for decoder in ("wan", "tae") for variant in VARIANTS]
    # Later resolutions: the baseline and the fastest variant of the first (once if they are the same).
    expected += [("32x48", "tae", *variant) for variant in dict.fromkeys([VARIANTS[0], fastest])]
    expected += [("32x32", "wan_compiled", *variant) for variant in VARIANTS]
    assert [key(r) for r in timed] == expected

    for record in timed:
        if record["precision"] == "fp8":  # refused off FP8 GPUs, recorded, the run went on
            assert "compute capability" in record["error"] and "dit_step_s" not in record
            continue
        assert "error" not in record, record
        stages = record["motion_s"] + record["pose_s"] + record["layout_s"] + record["dit_step_s"] + record["decode_s"]
        assert abs(record["e2e_fps"] - 81 / stages) < 1e-9 * record["e2e_fps"]
    first = [r for r in timed if r["resolution"] == "32x32" and r["decoder"] == "wan"]
    baseline, fp8, compiled = first
    assert all(r["bf16_eager_dit_step_s"] == baseline["dit_step_s"] for r in first if "error" not in r)
    assert "vs_bf16_eager" not in baseline and "vs_bf16_eager" not in fp8
    # The compiled bf16 step equals eager (the flow agreement is computed; FP8's needs an FP8 GPU).
    agreement = compiled["vs_bf16_eager"]
    assert agreement["flow_relative_error"] < 1e-5 and (agreement["flow_psnr_db"] is None or agreement["flow_psnr_db"] > 80)
    # Decoders: one time per decoder, shared by the DiT variants that ran.
    assert len({r["decode_s"] for r in first if "error" not in r}) == 1

    (profile,) = [r for r in records if r.get("kind") == "profile"]
    assert (profile["precision"], profile["compiled"]) == fastest
    classes = profile["seconds_per_class"]
    assert set(classes) == {"gemm", "attention", "quantisation", "copy", "elementwise"}
    assert classes["gemm"] > 0 and classes["attention"] > 0
    assert (classes["quantisation"] > 0) == (fastest[0] == "fp8")
    assert profile["top_kernels"][0]["s"] >= profile["top_kernels"][-1]["s"]
