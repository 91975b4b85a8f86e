"""Sequence parallelism (iasa.parallel) on CPU processes over gloo: Ulysses attention, dense and sparse, equals
one-process attention; shards round-trip with padding; what rank 0 broadcasts arrives intact; a bad process
count and a dead process end every rank with a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from iasa.attention import dense_mask, sparse_attention
from iasa.parallel import (
    HeadSplitError,
    ParallelConfig,
    ParallelGroup,
    ParallelLaunchError,
    SequenceShards,
    check_head_split,
    gather_tokens,
    shard_tokens,
    single_process,
    start_parallel_group,
    ulysses_attention,
)

sys.path.insert(0, str(Path(__file__).parent))
import parallel_worker as worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
WORKER = Path(__file__).with_name("parallel_worker.py")
# Generous: 4 processes start on 2 shared CPU cores. Only a hang reaches it.
LAUNCH_LIMIT_S = 300


def worker_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def full_attention_reference(heads_last: torch.Tensor, attention) -> torch.Tensor:
    """attention on (b, heads, S, d) views of (b, S, heads, d) tensors, back to (b, S, heads, d)."""
    return attention(*(t.transpose(1, 2) for t in heads_last)).transpose(1, 2)


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed next to python")
@pytest.mark.parametrize("processes", [2, 4])
def test_sequence_parallel_equals_one_process(tmp_path: Path, processes: int) -> None:
    assert worker.TOKENS % processes != 0, "the clip must need padding for this test to cover it"
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes), str(WORKER), "check", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=worker_environment(), capture_output=True, text=True, timeout=LAUNCH_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]

    keypoints = worker.clip_keypoints()
    layout = worker.clip_layout(keypoints)
    mask = dense_mask(layout, torch.device("cpu"))
    own_frame = torch.block_diag(*[torch.ones(layout.tokens_per_frame, layout.tokens_per_frame)] * layout.num_frames)
    assert 0 < mask.float().mean() < 1 and not torch.equal(mask, own_frame.bool())  # sparse across frames
    q, k, v = (t.requires_grad_() for t in worker.qkv())
    dense = full_attention_reference((q, k, v), F.scaled_dot_product_attention)
    sparse = full_attention_reference((q, k, v), lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask))
    (sparse * worker.loss_weights()).sum().backward()
    assert not torch.allclose(dense, sparse, atol=1e-3)
    local = -(-worker.TOKENS // processes)
    padded_q = torch.cat([q.detach(), torch.zeros(worker.BATCH, processes * local - worker.TOKENS, worker.HEADS, worker.HEAD_DIM)], 1)
    rope = torch.randn(worker.TOKENS, 1, 3, generator=torch.Generator().manual_seed(14), dtype=torch.complex64)
    padded_rope = torch.cat([rope, torch.zeros(processes * local - worker.TOKENS, 1, 3, dtype=torch.complex64)])
    motion, samples = worker.clip_motion(), worker.broadcast_samples()

    for rank in range(processes):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        facts = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, expected in (("dense", dense), ("sparse", sparse), ("grad_q", q.grad), ("grad_k", k.grad), ("grad_v", v.grad)):
            torch.testing.assert_close(got[name], expected.detach(), atol=1e-5, rtol=1e-5, msg=f"rank {rank}: {name}")
        assert torch.equal(got["shard_q"], padded_q[:, rank * local : (rank + 1) * local])
        assert torch.equal(got["rope_shard"], torch.view_as_real(padded_rope[rank * local : (rank + 1) * local]))
        assert torch.equal(got["frame_selection"], layout.frame_selection)
        assert torch.equal(got["token_regions"], layout.token_regions)
        assert torch.equal(got["keypoints_body"], torch.from_numpy(keypoints.body))
        assert torch.equal(got["keypoints_face_score"], torch.from_numpy(keypoints.face_score))
        assert torch.equal(got["motion_poses"], torch.from_numpy(motion.poses))
        assert torch.equal(got["motion_betas"], torch.from_numpy(motion.betas))
        for name, expected in samples.items():
            received = got[f"sample_{name}"]
            assert torch.equal(received, torch.view_as_real(expected) if expected.is_complex() else expected), name
        assert facts["grid_size"] == list(layout.grid_size) and facts["grid_size_is_tuple"]
        assert facts["block_size"] == layout.block_size and facts["region_names"] == list(layout.region_names)
        assert facts["image_size"] == list(keypoints.image_size) and facts["numpy_body"] and facts["fps"] == 25.0
        divisors = [n for n in range(1, processes + 2) if (processes + 1) % n == 0]
        assert f"{processes} processes cannot share the DiT's {processes + 1} attention heads" in facts["head_error"]
        assert f"--nproc_per_node with one of {divisors}" in facts["head_error"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("mode", "processes"), [("raise", 4), ("kill", 2), ("hang", 2)])
def test_a_process_that_dies_or_hangs_fails_every_other_rank(mode: str, processes: int) -> None:
    """Plain processes with torchrun's variables: without torchrun's agent (which would stop the others
    itself) only the collective timeout and error handling end the run."""
    port = free_port()
    launched = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**worker_environment(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                 "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes)},
        )  # fmt: skip
        for rank in range(processes)
    ]
    try:
        survivors = [launched[0], *launched[2:]]
        outputs = [process.communicate(timeout=LAUNCH_LIMIT_S) for process in survivors]
    finally:
        for process in launched:
            if process.poll() is None:
                process.kill()  # the hanging rank 1 (or everything, if the survivors hung)
        launched[1].communicate()
    for process, (stdout, stderr) in zip(survivors, outputs):
        assert "first all-to-all done" in stdout and "second all-to-all done" not in stdout
        assert process.returncode != 0
        assert "CollectiveError" in stderr and "all-to-all of q, k, v before self-attention failed" in stderr
        assert "Another process has most likely died or hangs (collectives wait 3 s" in stderr
    assert launched[1].returncode != 0


def test_shards_cover_the_padded_sequence_in_order() -> None:
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    ranks = [ParallelGroup(rank, 4, torch.device("cpu"), 1.0) for rank in range(4)]
    pieces = [shard_tokens(x, SequenceShards(5, parallel)) for parallel in ranks]
    assert [piece.shape[1] for piece in pieces] == [2, 2, 2, 2]
    assert torch.equal(torch.cat(pieces, 1), torch.cat([x, torch.zeros(2, 3, 3)], 1))
    assert not pieces[3].any()  # tokens 6 and 7: padding only
    assert [SequenceShards(5, parallel).start for parallel in ranks] == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="expected 5 tokens along dim 1"):
        shard_tokens(x[:, :4], SequenceShards(5, ranks[0]))


def test_one_process_runs_attention_fn_unchanged() -> None:
    shards = SequenceShards(worker.TOKENS, single_process())
    q, k, v = worker.qkv()
    layout = worker.clip_layout(worker.clip_keypoints())
    attention = lambda *t: sparse_attention(*t, layout, "reference")  # noqa: E731
    out = ulysses_attention(shard_tokens(q, shards), shard_tokens(k, shards), shard_tokens(v, shards), attention, shards)
    assert torch.equal(gather_tokens(out, shards), full_attention_reference((q, k, v), attention))


def test_a_process_count_that_does_not_divide_the_heads_is_a_clear_error() -> None:
    for processes in (1, 2, 4, 5, 8):
        check_head_split(40, processes)
    expected = r"3 processes cannot share the DiT's 40 attention heads .* one of \[1, 2, 4, 5, 8, 10, 20, 40\]"
    with pytest.raises(HeadSplitError, match=expected):
        check_head_split(40, 3)


def test_a_launch_without_torchrun_variables_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ParallelLaunchError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not: launch .* torchrun"):
        start_parallel_group(ParallelConfig(), "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert start_parallel_group(ParallelConfig(), "cpu").group is None
