"""FlexAttention kernel: tokens reordered by (frame, region), a BlockMask from the block layout.

The block mask comes from exact tile counts (block_layout.py): full tiles skip the mask function,
partial ones evaluate the rule's mask_mod (masks.class_mask: the class table read through per-token
class ids), empty ones are never visited. The dense mask is never built. Every layout gets its plan
once (permutation, block mask), reused by all layers and steps. The mask_mod reads tensors whose shapes
depend only on (T, R, S, block size), so a new clip of the same shape reuses the compiled kernel. On
CUDA the kernel is compiled; elsewhere FlexAttention runs its eager reference (forward only: it has no
CPU backward).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from dataclasses import dataclass

import torch
from einops import rearrange
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from iasa.attention.block_layout import block_layout, frame_region_order, inverse_permutation
from iasa.attention.chunk_layout import ChunkLayout, chunk_class_mask, chunk_class_table, chunk_token_classes
from iasa.attention.layout import BACKGROUND, SparseLayout
from iasa.attention.masks import class_mask, class_table, token_classes


@dataclass(frozen=True)
class FlexPlan:
    """permutation (S,): reordered position i holds token permutation[i]; inverse (S,) undoes it."""

    permutation: torch.Tensor
    inverse: torch.Tensor
    block_mask: BlockMask


def _partial_then_rest(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Bq, Bk) bool -> count (1, 1, Bq) int32 and key-block indices (1, 1, Bq, Bk) int32 with the
    selected tiles first, in increasing order (the layout BlockMask.from_kv_blocks expects)."""
    count = tiles.sum(-1, dtype=torch.int32)
    indices = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return count[None, None], indices[None, None]


def build_flex_plan(layout: SparseLayout, device: torch.device) -> FlexPlan:
    block_size = layout.block_size
    permutation = frame_region_order(layout)
    tiles = block_layout(layout, block_size, permutation)
    full = tiles.full.clone()
    # A tile running past the end of the sequence keeps its mask_mod: the kernel masks the overhang.
    if layout.num_tokens % block_size:
        full[-1, :] = False
        full[:, -1] = False
    partial = tiles.nonempty & ~full
    kv_num_blocks, kv_indices = _partial_then_rest(partial)
    full_kv_num_blocks, full_kv_indices = _partial_then_rest(full)

    # Class of every token in the reordered sequence, padded to whole blocks: padding tokens are the
    # background of an extra frame T that no frame selects (a padded row and column of the selection).
    frames = layout.num_frames
    token_class, regions = token_classes(layout)
    padded_class = torch.full((full.shape[0] * block_size,), frames * regions + BACKGROUND, dtype=torch.long)
    padded_class[: layout.num_tokens] = token_class[permutation]
    selection = torch.zeros(frames + 1, frames + 1, dtype=torch.bool)
    selection[:frames, :frames] = layout.frame_selection.cpu()
    mask_mod = class_mask(padded_class.to(device), class_table(selection, regions).to(device))

    block_mask = BlockMask.from_kv_blocks(
        kv_num_blocks.to(device),
        kv_indices.to(device),
        full_kv_num_blocks.to(device),
        full_kv_indices.to(device),
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod,
        seq_lengths=(layout.num_tokens, layout.num_tokens),
    )
    return FlexPlan(permutation.to(device), inverse_permutation(permutation).to(device), block_mask)


_PLANS: "weakref.WeakKeyDictionary[SparseLayout, dict[torch.device, FlexPlan]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class FlexChunkPlan:
    """A streamed chunk's plan: queries reordered by class (query_permutation (Sq,), its inverse), keys in the
    layout's order (a stream cache keeps each frame's region tokens in runs, iasa.video.stream_cache), and the
    rectangular block mask."""

    query_permutation: torch.Tensor
    query_inverse: torch.Tensor
    block_mask: BlockMask


def _class_histogram(classes: torch.Tensor, block_size: int, num_classes: int) -> torch.Tensor:
    """(blocks, classes) float64 token counts of consecutive blocks of a class list, on its device."""
    blocks = -(-classes.numel() // block_size)
    block = torch.arange(classes.numel(), device=classes.device) // block_size
    histogram = torch.zeros(blocks * num_classes, dtype=torch.float64, device=classes.device)
    histogram.index_add_(0, block * num_classes + classes, torch.ones_like(classes, dtype=torch.float64))
    return rearrange(histogram, "(b c) -> b c", c=num_classes)


def build_flex_chunk_plan(layout: ChunkLayout, device: torch.device) -> FlexChunkPlan:
    """The chunk's tile counts are block_layout's, with separate query and key histograms:
    count[qb, kb] = sum over classes of n_q[qb, cq] * table[cq, ck] * n_k[kb, ck]. Keys past the last whole
    block and padding keys (chunk_layout) are class Tk * R, which nothing attends. All tensor work on `device`
    (the cache's), with no host synchronisation: a stream plans each chunk where its keys are."""
    layout = layout.to(device)
    block_size = layout.block_size
    query_class, key_class = chunk_token_classes(layout)
    query_permutation = torch.sort(query_class, stable=True).indices
    query_class = query_class[query_permutation]
    table = chunk_class_table(layout)
    num_classes = table.shape[0]
    padding = layout.num_frames * layout.region_ids
    query_histogram = _class_histogram(query_class, block_size, num_classes)
    key_histogram = _class_histogram(key_class, block_size, num_classes)
    counts = (query_histogram @ table.double() @ key_histogram.T).round().long()
    tile_sizes = query_histogram.sum(1).round().long()[:, None] * key_histogram.sum(1).round().long()[None, :]
    full = counts == tile_sizes
    # A tile running past the end of either sequence keeps its mask_mod: the kernel masks the overhang.
    if layout.num_queries % block_size:
        full[-1, :] = False
    if layout.num_keys % block_size:
        full[:, -1] = False
    partial = (counts > 0) & ~full
    kv_num_blocks, kv_indices = _partial_then_rest(partial)
    full_kv_num_blocks, full_kv_indices = _partial_then_rest(full)

    def padded(classes: torch.Tensor, blocks: int) -> torch.Tensor:
        result = torch.full((blocks * block_size,), padding, dtype=torch.long, device=device)
        result[: classes.numel()] = classes
        return result

    mask_mod = chunk_class_mask(padded(query_class, full.shape[0]), padded(key_class, full.shape[1]), table)
    block_mask = BlockMask.from_kv_blocks(
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, BLOCK_SIZE=block_size, mask_mod=mask_mod,
        seq_lengths=(layout.num_queries, layout.num_keys),
    )  # fmt: skip
    return FlexChunkPlan(query_permutation, inverse_permutation(query_permutation), block_mask)


def cached_flex_plan(layout: SparseLayout, device: torch.device) -> FlexPlan:
    per_device = _PLANS.setdefault(layout, {})
    if device not in per_device:
        per_device[device] = build_flex_plan(layout, device)
    return per_device[device]


_CHUNK_PLANS: "weakref.WeakKeyDictionary[ChunkLayout, dict[torch.device, FlexChunkPlan]]" = weakref.WeakKeyDictionary()


def cached_flex_chunk_plan(layout: ChunkLayout, device: torch.device) -> FlexChunkPlan:
    per_device = _CHUNK_PLANS.setdefault(layout, {})
    if device not in per_device:
        per_device[device] = build_flex_chunk_plan(layout, device)
    return per_device[device]


@functools.cache
def _compiled_flex_attention():
    return torch.compile(flex_attention, dynamic=False)


def flex_sparse_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: SparseLayout
) -> torch.Tensor:
    """query, key, value (B, H, S, D) -> (B, H, S, D)."""
    plan = cached_flex_plan(layout, query.device)
    query, key, value = (x.index_select(-2, plan.permutation) for x in (query, key, value))
    return _run_flex(query, key, value, plan.block_mask).index_select(-2, plan.inverse)


def flex_chunk_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: ChunkLayout
) -> torch.Tensor:
    """A streamed chunk: query (B, H, Sq, D), key, value (B, H, Sk, D) -> (B, H, Sq, D)."""
    plan = cached_flex_chunk_plan(layout, query.device)
    query = query.index_select(-2, plan.query_permutation)
    return _run_flex(query, key, value, plan.block_mask).index_select(-2, plan.query_inverse)


def _run_flex(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    if query.is_cuda:
        return _compiled_flex_attention()(query, key, value, block_mask=block_mask)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value)):
        raise NotImplementedError("FlexAttention has no backward off CUDA; use backend='reference' to train on CPU")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(query, key, value, block_mask=block_mask)
