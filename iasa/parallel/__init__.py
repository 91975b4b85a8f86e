"""Several processes, one clip: the DiT split over GPUs by sequence parallelism (Ulysses), under torchrun.

    parallel_group(ParallelConfig, device_type)       join torchrun's processes, timeout on collectives
                                                      (process_group.py)
    SequenceShards / shard_tokens / gather_tokens     the (f h w) tokens in N contiguous shards (ulysses.py)
    ulysses_attention(q, k, v, attention_fn, shards)  all-to-all over heads around the project's attention
    broadcast_tensors / broadcast_dataclass           motion, keypoints, layout computed once, sent by rank 0
    broadcast_module                                  random weights made equal on every rank (broadcast.py)
"""

from iasa.parallel.broadcast import broadcast_dataclass, broadcast_module, broadcast_tensors
from iasa.parallel.config import ParallelConfig
from iasa.parallel.process_group import (
    CollectiveError,
    ParallelGroup,
    ParallelLaunchError,
    collective,
    parallel_group,
    single_process,
    start_parallel_group,
)
from iasa.parallel.ulysses import (
    AttentionFn,
    HeadSplitError,
    SequenceShards,
    check_head_split,
    gather_tokens,
    shard_tokens,
    ulysses_attention,
)

__all__ = [
    "AttentionFn",
    "CollectiveError",
    "HeadSplitError",
    "ParallelConfig",
    "ParallelGroup",
    "ParallelLaunchError",
    "SequenceShards",
    "broadcast_dataclass",
    "broadcast_module",
    "broadcast_tensors",
    "check_head_split",
    "collective",
    "gather_tokens",
    "parallel_group",
    "shard_tokens",
    "single_process",
    "start_parallel_group",
    "ulysses_attention",
]
