"""Input-aware sparse attention against dense attention at Wan2.1-14B shapes (GPU).

    python scripts/bench_attention.py            # 512x512, 480x832, 720x1280 at 81 frames, K in {2, 4, 8}
    python scripts/bench_attention.py --quick    # 512x512, K = 4: a smoke run
    python scripts/bench_attention.py --check    # flex and fast against reference on a small shape

Shapes: batch 1, 40 heads, head dim 128, bf16. Layouts come from a synthetic speaker (procedural
motion, iasa/pose/synthetic_speaker.py) with the default SparseAttentionConfig but K. For every
resolution: dense cuDNN SDPA and dense flash SDPA (K-independent), then per K the sparse paths:
reference (SDPA + dense mask; only up to REFERENCE_MAX_TOKENS tokens, else a record saying it was
skipped), flex (FlexAttention, compiled) and fast (iasa.attention.fast, when it imports).

Effective TFLOP/s = 4 S^2 D H x density / time (forward); forward+backward counts 3.5x the forward
FLOPs. speedup and efficiency compare with dense cuDNN SDPA of the same run; efficiency = effective
TFLOP/s of the path / TFLOP/s of dense cuDNN. Every time is a median over back-to-back calls after a
warm-up of WARMUP_SECONDS (see median_cuda_ms). layout_build_ms, layout_build_min_ms: median and
minimum of 9 build_sparse_layout calls on the CPU after a warm-up call. first_call_ms: the first
forward call (compilation, plan building).
The fast path's forward is also measured paired with dense cuDNN: PAIRED_ROUNDS rounds of (dense, fast)
back to back, so both see the same clocks (round-to-round drift on one GPU was a few %, as large as
the margins of the targets); paired_efficiency_vs_dense_cudnn is the median of the per-round ratios.
Where the fast forward's time goes: own_frame_fwd_ms and cross_region_fwd_ms time its two parts alone
(iasa.attention.fast.forward_parts), each with its efficiency against the paired dense time at its own
density (own frame: 1 / T; cross region: the rest). Results go to benchmarks/results/attention.json,
rewritten after every record.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.attention import SparseAttentionConfig, build_sparse_layout, density_statistics, sparse_attention  # noqa: E402
from iasa.pose.synthetic_speaker import synthetic_speaker  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "attention.json"
HEADS, HEAD_DIM, DTYPE = 40, 128, torch.bfloat16
VIDEO_FRAMES = 81
RESOLUTIONS = ((512, 512), (480, 832), (720, 1280))
TOP_KS = (2, 4, 8)
# The dense (S, S) bool mask of the reference path: 21,504 tokens -> 0.46 GB; larger clips are skipped.
REFERENCE_MAX_TOKENS = 24_000
BACKWARD_FLOP_FACTOR = 3.5
FORWARD_ITERATIONS, BACKWARD_ITERATIONS = 10, 5
WARMUP_CALLS, WARMUP_SECONDS, MIN_TIMED_SECONDS, MAX_TIMED_CALLS = 2, 1.0, 0.3, 300
PAIRED_ROUNDS = 3

# Every record carries these keys (None where they do not apply, e.g. K of a dense path).
RECORD_KEYS = (
    "resolution", "tokens", "K", "density", "path", "fwd_ms", "fwd_bwd_ms", "effective_tflops",
    "speedup_vs_dense_cudnn", "efficiency_vs_dense_cudnn", "layout_build_ms",
)  # fmt: skip

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def median_cuda_ms(step: Callable[[], None], iterations: int) -> float:
    """Median GPU time of one call, with the calls queued back to back as a model's 40 layers are.

    First WARMUP_SECONDS of back-to-back calls: the GPU's clocks settle to the power state they keep
    under sustained load (timed right after a 200 ms dense kernel, a 2 ms sparse call ran up to 15 %
    slower than after a few of its own). Then at least `iterations` calls and MIN_TIMED_SECONDS.
    No synchronisation between calls: the host queues call i + 1 while the GPU runs call i, so a path
    made of several kernels is not charged for host launch latency that a model hides (a per-call
    synchronise charged the multi-kernel sparse path ~0.5 ms of idle GPU per call, the one-kernel dense
    path nothing). Each call is still timed alone by its own pair of events.
    """
    calls, chunk, start = 0, 1, time.perf_counter()
    while calls < WARMUP_CALLS or time.perf_counter() - start < WARMUP_SECONDS:
        for _ in range(chunk):
            step()
        torch.cuda.synchronize()
        calls, chunk = calls + chunk, chunk * 2
    per_call_s = (time.perf_counter() - start) / calls
    count = min(MAX_TIMED_CALLS, max(iterations, math.ceil(MIN_TIMED_SECONDS / per_call_s)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    for start_event, end_event in zip(starts, ends):
        start_event.record()
        step()
        end_event.record()
    torch.cuda.synchronize()
    return statistics.median(start_event.elapsed_time(end_event) for start_event, end_event in zip(starts, ends))


def time_path(record: dict, attention: AttentionFn, inputs: tuple[torch.Tensor, ...]) -> None:
    """Set first_call_ms, fwd_ms (no grad) and fwd_bwd_ms of one attention function in ``record``, each
    as soon as it is known (a failing backward keeps the forward numbers)."""
    query, key, value = inputs
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        attention(query, key, value)
    torch.cuda.synchronize()
    record["first_call_ms"] = round(1000 * (time.perf_counter() - start), 1)

    def forward() -> None:
        with torch.no_grad():
            attention(query, key, value)

    record["fwd_ms"] = round(median_cuda_ms(forward, FORWARD_ITERATIONS), 3)
    leaves = [x.detach().requires_grad_() for x in inputs]
    grad_output = torch.randn_like(query)

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        attention(*leaves).backward(grad_output)

    record["fwd_bwd_ms"] = round(median_cuda_ms(forward_backward, BACKWARD_ITERATIONS), 3)


def dense_sdpa(backend: SDPBackend) -> AttentionFn:
    def attention(query, key, value):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(query, key, value)

    return attention


def add_rates(record: dict, tokens: int, dense_cudnn: dict | None) -> dict:
    flops = 4 * tokens**2 * HEAD_DIM * HEADS * record["density"]
    if record.get("fwd_ms"):
        record["effective_tflops"] = round(flops / record["fwd_ms"] / 1e9, 1)
    if record.get("fwd_bwd_ms"):
        record["effective_tflops_fwd_bwd"] = round(BACKWARD_FLOP_FACTOR * flops / record["fwd_bwd_ms"] / 1e9, 1)
    if dense_cudnn and record.get("fwd_ms"):
        dense_tflops = 4 * tokens**2 * HEAD_DIM * HEADS / dense_cudnn["fwd_ms"] / 1e9
        record["speedup_vs_dense_cudnn"] = round(dense_cudnn["fwd_ms"] / record["fwd_ms"], 3)
        record["efficiency_vs_dense_cudnn"] = round(record["effective_tflops"] / dense_tflops, 3)
    if dense_cudnn and record.get("fwd_bwd_ms") and dense_cudnn.get("fwd_bwd_ms"):
        dense_tflops = BACKWARD_FLOP_FACTOR * 4 * tokens**2 * HEAD_DIM * HEADS / dense_cudnn["fwd_bwd_ms"] / 1e9
        record["speedup_fwd_bwd_vs_dense_cudnn"] = round(dense_cudnn["fwd_bwd_ms"] / record["fwd_bwd_ms"], 3)
        record["efficiency_fwd_bwd_vs_dense_cudnn"] = round(record["effective_tflops_fwd_bwd"] / dense_tflops, 3)
    return record


def fast_available() -> str | None:
    """None when iasa.attention.fast imports, else why not."""
    try:
        import iasa.attention.fast  # noqa: F401
    except Exception as error:  # any import failure means: no fast path in this run
        return f"{type(error).__name__}: {error}"
    return None


def measure(record: dict, attention: AttentionFn, inputs, tokens: int, dense_cudnn: dict | None) -> dict:
    try:
        time_path(record, attention, inputs)
    except Exception as error:  # keep the run going: one path failing must not lose the others
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        traceback.print_exc()
    finally:
        torch.cuda.empty_cache()
    return add_rates(record, tokens, dense_cudnn)


def add_paired_forward(record: dict, attention: AttentionFn, inputs) -> None:
    """paired_fwd_ms, paired_dense_cudnn_fwd_ms and paired_efficiency_vs_dense_cudnn (module docstring)."""
    dense = dense_sdpa(SDPBackend.CUDNN_ATTENTION)
    pairs = []
    with torch.no_grad():
        for _ in range(PAIRED_ROUNDS):
            dense_ms = median_cuda_ms(lambda: dense(*inputs), FORWARD_ITERATIONS)
            path_ms = median_cuda_ms(lambda: attention(*inputs), FORWARD_ITERATIONS)
            pairs.append((dense_ms, path_ms))
    record["paired_dense_cudnn_fwd_ms"] = round(statistics.median(dense for dense, _ in pairs), 3)
    record["paired_fwd_ms"] = round(statistics.median(path for _, path in pairs), 3)
    ratios = [record["density"] * dense / path for dense, path in pairs]
    record["paired_efficiency_vs_dense_cudnn"] = round(statistics.median(ratios), 3)
    record["paired_efficiency_rounds"] = [round(ratio, 3) for ratio in ratios]


def add_fast_breakdown(record: dict, layout, inputs) -> None:
    """Time the fast forward's own-frame and cross-region parts alone (see the module docstring)."""
    from iasa.attention.fast import forward_parts

    parts = forward_parts(*inputs, layout)
    own_ms = median_cuda_ms(parts["own_frame"], FORWARD_ITERATIONS)
    cross_ms = median_cuda_ms(parts["cross_region"], FORWARD_ITERATIONS)
    record["own_frame_fwd_ms"], record["cross_region_fwd_ms"] = round(own_ms, 3), round(cross_ms, 3)
    dense_ms = record["paired_dense_cudnn_fwd_ms"]
    own_density = 1.0 / layout.num_frames
    record["own_frame_efficiency"] = round(own_density * dense_ms / own_ms, 3)
    record["cross_region_efficiency"] = round((record["density"] - own_density) * dense_ms / cross_ms, 3)


def layout_build_times(keypoints, config: SparseAttentionConfig, repeats: int = 9) -> tuple[list[float], object]:
    """Times of `repeats` builds after a warm-up one, and the layout."""
    layout = build_sparse_layout(keypoints, config)  # warm-up (imports, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        layout = build_sparse_layout(keypoints, config)
        times.append(1000 * (time.perf_counter() - start))
    return times, layout


def run_benchmark(resolutions, top_ks, output: Path) -> None:
    payload = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "records": []}
    fast_problem = fast_available()
    if fast_problem:
        print(f"fast path skipped: iasa.attention.fast does not import ({fast_problem})")

    def emit(record: dict) -> None:
        payload["records"].append({**{key: None for key in RECORD_KEYS}, **record})
        write_json(output, payload)
        shown = {k: record.get(k) for k in ("resolution", "K", "path", "density", "fwd_ms", "fwd_bwd_ms",
                                            "effective_tflops", "speedup_vs_dense_cudnn", "error", "note")}  # fmt: skip
        print(json.dumps({k: v for k, v in shown.items() if v is not None}), flush=True)

    for height, width in resolutions:
        resolution = f"{height}x{width}"
        keypoints = synthetic_speaker(VIDEO_FRAMES, (height, width), seed=0)
        base = {"resolution": resolution}
        generator = torch.Generator(device="cuda").manual_seed(0)
        probe = build_sparse_layout(keypoints, SparseAttentionConfig())
        tokens = probe.num_tokens
        inputs = tuple(
            torch.randn(1, HEADS, tokens, HEAD_DIM, device="cuda", dtype=DTYPE, generator=generator) for _ in range(3)
        )
        dense_cudnn = None
        for path, backend in (("dense_cudnn", SDPBackend.CUDNN_ATTENTION), ("dense_flash", SDPBackend.FLASH_ATTENTION)):
            record = measure({**base, "tokens": tokens, "K": None, "density": 1.0, "path": path},
                             dense_sdpa(backend), inputs, tokens, dense_cudnn)  # fmt: skip
            if path == "dense_cudnn" and "fwd_ms" in record:
                dense_cudnn = record
                add_rates(record, tokens, dense_cudnn)
            emit(record)
        for top_k in top_ks:
            config = SparseAttentionConfig(top_k=top_k)
            build_times, layout = layout_build_times(keypoints, config)
            stats = density_statistics(layout)
            common = {
                **base, "tokens": tokens, "K": top_k, "density": round(stats["token_density"], 5),
                "block_density": round(stats["reordered_block_density"], 5),
                "full_block_fraction": round(stats["reordered_full_block_fraction"], 4),
                "direction": config.direction, "layout_build_ms": round(statistics.median(build_times), 2),
                "layout_build_min_ms": round(min(build_times), 2),
            }  # fmt: skip
            for path in ("reference", "flex", "fast"):
                record = {**common, "path": path}
                if path == "reference" and tokens > REFERENCE_MAX_TOKENS:
                    record["note"] = f"skipped: the dense {tokens}x{tokens} mask is only built up to {REFERENCE_MAX_TOKENS} tokens"
                    emit(record)
                    continue
                if path == "fast" and fast_problem:
                    record["note"] = f"skipped: iasa.attention.fast does not import ({fast_problem})"
                    emit(record)
                    continue
                if path == "reference":
                    record["note"] = f"measured only up to {REFERENCE_MAX_TOKENS} tokens (dense S x S mask)"

                def attention(query, key, value, layout=layout, path=path):
                    return sparse_attention(query, key, value, layout, backend=path)

                record = measure(record, attention, inputs, tokens, dense_cudnn)
                if path == "fast" and "error" not in record:
                    try:
                        add_paired_forward(record, attention, inputs)
                        add_fast_breakdown(record, layout, inputs)
                    except Exception as error:  # the single-shot numbers stand without these
                        record["paired_error"] = f"{type(error).__name__}: {error}"
                    finally:
                        torch.cuda.empty_cache()
                emit(record)
        del inputs
        torch.cuda.empty_cache()
    print(f"wrote {output}")


def run_check(output: Path | None) -> bool:
    """flex and fast against the reference (fp32 ground truth) on a small clip, forward and backward."""
    heads, height, width = 8, 256, 256
    keypoints = synthetic_speaker(VIDEO_FRAMES, (height, width), seed=1)
    fast_problem = fast_available()
    paths = ["flex"] + ([] if fast_problem else ["fast"])
    if fast_problem:
        print(f"fast path not checked: iasa.attention.fast does not import ({fast_problem})")
    passed = True
    results = []
    for direction, top_k in (("past", 4), ("both", 2)):
        layout = build_sparse_layout(keypoints, SparseAttentionConfig(top_k=top_k, direction=direction))
        generator = torch.Generator(device="cuda").manual_seed(2)
        tensors = [torch.randn(1, heads, layout.num_tokens, HEAD_DIM, device="cuda", generator=generator) for _ in range(4)]
        query, key, value, grad_output = tensors
        leaves = [x.clone().requires_grad_() for x in (query, key, value)]
        truth = sparse_attention(*leaves, layout, backend="reference")
        truth_grads = torch.autograd.grad(truth, leaves, grad_output)
        for path in paths:
            low = [x.to(DTYPE).requires_grad_() for x in (query, key, value)]
            result = sparse_attention(*low, layout, backend=path)
            grads = torch.autograd.grad(result, low, grad_output.to(DTYPE))
            errors = {"out": (result.float() - truth).abs().max().item() / truth.abs().max().item()}
            for name, got, want in zip(("dq", "dk", "dv"), grads, truth_grads):
                errors[name] = (got.float() - want).abs().max().item() / want.abs().max().item()
            ok = all(error < 2e-2 for error in errors.values())
            passed &= ok
            results.append({"path": path, "direction": direction, "K": top_k, "tokens": layout.num_tokens,
                            "max_error_relative_to_max": errors, "ok": ok})  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
    if output is not None:
        write_json(output, {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": results})
    print("check passed" if passed else "check FAILED")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one resolution (512x512) and one K (4)")
    parser.add_argument("--check", action="store_true", help="compare flex and fast with reference, then exit")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON to write (default {RESULTS}; --check: none)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_attention.py needs a CUDA GPU (run it on the GPU machine)")
    if args.check:
        sys.exit(0 if run_check(args.out) else 1)
    resolutions, top_ks = ((RESOLUTIONS[0],), (4,)) if args.quick else (RESOLUTIONS, TOP_KS)
    run_benchmark(resolutions, top_ks, args.out or RESULTS)


if __name__ == "__main__":
    main()
