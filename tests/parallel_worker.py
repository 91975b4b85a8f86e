"""One process of the sequence-parallel tests (tests/test_sequence_parallel.py), started N times by torchrun
or by the test itself with torchrun's environment variables.

    parallel_worker.py check OUT_DIR        every check; writes OUT_DIR/rank<r>.safetensors and .json
    parallel_worker.py raise|kill|hang      one successful all-to-all, then rank 1 raises, is killed or
                                            hangs while the others attempt the next one
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.attention import SparseAttentionConfig, SparseLayout, build_sparse_layout, sparse_attention  # noqa: E402
from iasa.pose.synthetic_speaker import synthetic_speaker  # noqa: E402
from iasa.motion.motion_file import SmplxMotion  # noqa: E402
from iasa.parallel import (  # noqa: E402
    HeadSplitError,
    ParallelConfig,
    SequenceShards,
    broadcast_dataclass,
    broadcast_tensors,
    gather_tokens,
    parallel_group,
    shard_tokens,
    ulysses_attention,
)
from iasa.pose.keypoints import WholeBodyKeypoints  # noqa: E402

# 9 video frames -> 3 latent frames of 5 x 7 tokens: S = 105, odd, so 2 and 4 shards need padding.
VIDEO_FRAMES, IMAGE_SIZE, GRID = 9, (80, 112), (5, 7)
TOKENS = ((VIDEO_FRAMES - 1) // 4 + 1) * GRID[0] * GRID[1]
BATCH, HEADS, HEAD_DIM = 2, 4, 8
DEATH_TIMEOUT_S = 3.0


def clip_keypoints() -> WholeBodyKeypoints:
    return synthetic_speaker(VIDEO_FRAMES, IMAGE_SIZE, seed=5)


def clip_layout(keypoints: WholeBodyKeypoints) -> SparseLayout:
    return build_sparse_layout(keypoints, SparseAttentionConfig(top_k=1, direction="both", block_size=16), GRID)


def clip_motion() -> SmplxMotion:
    generator = np.random.default_rng(3)
    still = SmplxMotion.still(7, fps=25.0)
    arrays = (still.poses, still.expressions, still.trans, still.betas)
    return SmplxMotion(*(generator.standard_normal(a.shape).astype(np.float32) for a in arrays), fps=25.0)


def qkv(heads: int = HEADS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key, value (b, S, heads, d) of the whole clip, the same in every process."""
    generator = torch.Generator().manual_seed(11)
    return tuple(torch.randn(BATCH, TOKENS, heads, HEAD_DIM, generator=generator) for _ in range(3))


def loss_weights() -> torch.Tensor:
    return torch.randn(BATCH, TOKENS, HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(12))


def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def broadcast_samples() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(13)
    return {
        "mask": torch.rand(3, 5, generator=generator) > 0.5,
        "half": torch.randn(4, 6, generator=generator).to(torch.bfloat16),
        "complex": torch.randn(7, 2, generator=generator, dtype=torch.complex64),
        "index": torch.randint(-1000, 1000, (9,), generator=generator),
        "empty": torch.zeros(0, 3),
    }


def run_checks(out_dir: Path) -> None:
    with parallel_group(ParallelConfig(collective_timeout_s=60), "cpu") as parallel:
        main = parallel.is_main
        keypoints = broadcast_dataclass(clip_keypoints() if main else None, WholeBodyKeypoints, parallel)
        layout = broadcast_dataclass(clip_layout(keypoints) if main else None, SparseLayout, parallel)
        motion = broadcast_dataclass(clip_motion() if main else None, SmplxMotion, parallel)
        samples = broadcast_tensors(broadcast_samples() if main else None, parallel)

        shards = SequenceShards(TOKENS, parallel)
        local = [shard_tokens(t, shards).requires_grad_() for t in qkv()]
        dense_out = gather_tokens(ulysses_attention(*local, dense, shards), shards)
        sparse_fn = lambda q, k, v: sparse_attention(q, k, v, layout, "reference")  # noqa: E731
        sparse_out = gather_tokens(ulysses_attention(*local, sparse_fn, shards), shards)
        (sparse_out * loss_weights()).sum().backward()
        grads = [gather_tokens(t.grad, shards) for t in local]

        rope_like = torch.randn(TOKENS, 1, 3, generator=torch.Generator().manual_seed(14), dtype=torch.complex64)
        try:
            ulysses_attention(*(shard_tokens(t, shards) for t in qkv(parallel.world_size + 1)), dense, shards)
            head_error = ""
        except HeadSplitError as error:
            head_error = str(error)

        results = {
            "dense": dense_out, "sparse": sparse_out, "grad_q": grads[0], "grad_k": grads[1], "grad_v": grads[2],
            "shard_q": local[0].detach(), "rope_shard": torch.view_as_real(shard_tokens(rope_like, shards, dim=0)),
            "frame_selection": layout.frame_selection, "token_regions": layout.token_regions,
            "keypoints_body": torch.from_numpy(keypoints.body), "keypoints_face_score": torch.from_numpy(keypoints.face_score),
            "motion_poses": torch.from_numpy(motion.poses), "motion_betas": torch.from_numpy(motion.betas),
            **{f"sample_{name}": torch.view_as_real(t) if t.is_complex() else t for name, t in samples.items()},
        }  # fmt: skip
        save_file({name: t.contiguous() for name, t in results.items()}, str(out_dir / f"rank{parallel.rank}.safetensors"))
        facts = {
            "rank": parallel.rank, "world_size": parallel.world_size, "head_error": head_error,
            "grid_size": list(layout.grid_size), "grid_size_is_tuple": isinstance(layout.grid_size, tuple),
            "block_size": layout.block_size, "region_names": list(layout.region_names),
            "image_size": list(keypoints.image_size), "fps": motion.fps, "numpy_body": isinstance(keypoints.body, np.ndarray),
        }  # fmt: skip
        (out_dir / f"rank{parallel.rank}.json").write_text(json.dumps(facts))


def run_death(mode: str) -> None:
    with parallel_group(ParallelConfig(collective_timeout_s=DEATH_TIMEOUT_S), "cpu") as parallel:
        shards = SequenceShards(TOKENS, parallel)
        local = [shard_tokens(t, shards) for t in qkv()]
        ulysses_attention(*local, dense, shards)
        print(f"rank {parallel.rank}: first all-to-all done", flush=True)
        if parallel.rank == 1:
            if mode == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)  # hang: the test ends this process once the others have failed
        ulysses_attention(*local, dense, shards)
        print(f"rank {parallel.rank}: second all-to-all done (it should have failed)", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        run_checks(Path(sys.argv[2]))
    else:
        run_death(sys.argv[1])
