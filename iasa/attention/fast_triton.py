"""Triton kernels of the cross-region part: region tokens attending to the same region in chosen frames.

Inputs are compact sequences (batch, heads, M, head_dim), contiguous, holding only region tokens in
(frame, region) order (see fast_plan). A query tile is a piece of one (frame, region) segment; its keys
are the few segments listed for it, read in place, so no key or value is ever copied per query frame.
Every kernel is a flash-attention loop (online softmax, log2 domain) over those key ranges:
- forward writes the output and the natural log-sum-exp of the part (-inf where a row has no key);
- backward takes the MERGED output's row dot D = rowsum(dO * O) and the MERGED log-sum-exp, so its
  gradients are this part's share of the whole softmax's gradients; dQ walks query tiles over key
  segments, dK and dV walk key tiles over the query segments that read them (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from iasa.attention.fast_plan import TILE_TOKENS, CrossRegionPlan

LOG2_E = 1.4426950408889634
# Inner tile over the rows a tile walks (keys in forward and dQ, queries in dK/dV).
INNER_TOKENS = 64
NUM_WARPS = 4
NUM_STAGES = 2


@triton.jit
def _cross_region_forward(
    Q, K, V, Out, Lse,
    tile_start, tile_end, tile_segment, key_ptr, key_start, key_end,
    num_rows, scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)
    base = head * num_rows * HEAD_DIM
    row_first = tl.load(tile_start + tile)
    row_stop = tl.load(tile_end + tile)
    segment = tl.load(tile_segment + tile)
    rows = row_first + tl.arange(0, BLOCK_M)
    row_ok = rows < row_stop
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + base + rows[:, None] * HEAD_DIM + dims[None, :], mask=row_ok[:, None], other=0.0)

    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for edge in range(tl.load(key_ptr + segment), tl.load(key_ptr + segment + 1)):
        col_stop = tl.load(key_end + edge)
        for col_first in range(tl.load(key_start + edge), col_stop, BLOCK_N):
            cols = col_first + tl.arange(0, BLOCK_N)
            col_ok = cols < col_stop
            offsets = base + cols[:, None] * HEAD_DIM + dims[None, :]
            k = tl.load(K + offsets, mask=col_ok[:, None], other=0.0)
            v = tl.load(V + offsets, mask=col_ok[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale_log2
            scores = tl.where(col_ok[None, :], scores, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(scores, 1))
            rescale = tl.exp2(row_max - new_max)
            p = tl.exp2(scores - new_max[:, None])
            row_sum = row_sum * rescale + tl.sum(p, 1)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
            row_max = new_max

    has_keys = row_sum > 0
    safe_sum = tl.where(has_keys, row_sum, 1.0)
    out = acc / safe_sum[:, None]
    lse = tl.where(has_keys, (row_max + tl.log2(safe_sum)) * 0.6931471805599453, float("-inf"))
    tl.store(Out + base + rows[:, None] * HEAD_DIM + dims[None, :], out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(Lse + head * num_rows + rows, lse, mask=row_ok)


@triton.jit
def _cross_region_backward_query(
    Q, K, V, dO, Lse, RowDot, dQ,
    tile_start, tile_end, tile_segment, key_ptr, key_start, key_end,
    num_rows, scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)
    base = head * num_rows * HEAD_DIM
    row_first = tl.load(tile_start + tile)
    row_stop = tl.load(tile_end + tile)
    segment = tl.load(tile_segment + tile)
    rows = row_first + tl.arange(0, BLOCK_M)
    row_ok = rows < row_stop
    dims = tl.arange(0, HEAD_DIM)
    row_offsets = base + rows[:, None] * HEAD_DIM + dims[None, :]
    q = tl.load(Q + row_offsets, mask=row_ok[:, None], other=0.0)
    d_out = tl.load(dO + row_offsets, mask=row_ok[:, None], other=0.0)
    lse_log2 = tl.load(Lse + head * num_rows + rows, mask=row_ok, other=float("inf")) * 1.4426950408889634
    row_dot = tl.load(RowDot + head * num_rows + rows, mask=row_ok, other=0.0)
    scale_log2 = scale * 1.4426950408889634

    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for edge in range(tl.load(key_ptr + segment), tl.load(key_ptr + segment + 1)):
        col_stop = tl.load(key_end + edge)
        for col_first in range(tl.load(key_start + edge), col_stop, BLOCK_N):
            cols = col_first + tl.arange(0, BLOCK_N)
            col_ok = cols < col_stop
            offsets = base + cols[:, None] * HEAD_DIM + dims[None, :]
            k = tl.load(K + offsets, mask=col_ok[:, None], other=0.0)
            v = tl.load(V + offsets, mask=col_ok[:, None], other=0.0)
            p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse_log2[:, None])
            p = tl.where(col_ok[None, :], p, 0.0)
            d_p = tl.dot(d_out, tl.trans(v))
            d_scores = p * (d_p - row_dot[:, None])
            acc += tl.dot(d_scores.to(k.dtype), k)
    tl.store(dQ + row_offsets, (acc * scale).to(dQ.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _cross_region_backward_key(
    Q, K, V, dO, Lse, RowDot, dK, dV,
    tile_start, tile_end, tile_segment, query_ptr, query_start, query_end,
    num_rows, scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)
    base = head * num_rows * HEAD_DIM
    col_first = tl.load(tile_start + tile)
    col_stop = tl.load(tile_end + tile)
    segment = tl.load(tile_segment + tile)
    cols = col_first + tl.arange(0, BLOCK_N)
    col_ok = cols < col_stop
    dims = tl.arange(0, HEAD_DIM)
    col_offsets = base + cols[:, None] * HEAD_DIM + dims[None, :]
    k = tl.load(K + col_offsets, mask=col_ok[:, None], other=0.0)
    v = tl.load(V + col_offsets, mask=col_ok[:, None], other=0.0)
    scale_log2 = scale * 1.4426950408889634

    d_key = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    d_value = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for edge in range(tl.load(query_ptr + segment), tl.load(query_ptr + segment + 1)):
        row_stop = tl.load(query_end + edge)
        for row_first in range(tl.load(query_start + edge), row_stop, BLOCK_M):
            rows = row_first + tl.arange(0, BLOCK_M)
            row_ok = rows < row_stop
            offsets = base + rows[:, None] * HEAD_DIM + dims[None, :]
            q = tl.load(Q + offsets, mask=row_ok[:, None], other=0.0)
            d_out = tl.load(dO + offsets, mask=row_ok[:, None], other=0.0)
            lse_log2 = tl.load(Lse + head * num_rows + rows, mask=row_ok, other=float("inf")) * 1.4426950408889634
            row_dot = tl.load(RowDot + head * num_rows + rows, mask=row_ok, other=0.0)
            # Rows past the segment have lse = +inf, so their probabilities are exactly 0.
            p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse_log2[:, None])
            d_value += tl.dot(tl.trans(p).to(d_out.dtype), d_out)
            d_p = tl.dot(d_out, tl.trans(v))
            d_scores = p * (d_p - row_dot[:, None])
            d_key += tl.dot(tl.trans(d_scores).to(q.dtype), q)
    tl.store(dK + col_offsets, (d_key * scale).to(dK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(dV + col_offsets, d_value.to(dV.dtype.element_ty), mask=col_ok[:, None])


def _grid(plan: CrossRegionPlan, compact: torch.Tensor) -> tuple[int, int]:
    return (plan.num_tiles, compact.shape[0] * compact.shape[1])


def cross_region_forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, plan: CrossRegionPlan, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """query, key, value: (batch, heads, M, head_dim) contiguous compact sequences.

    Returns out (batch, heads, M, head_dim) and lse (batch, heads, M) float32, -inf on rows with no key.
    """
    batch, heads, rows, head_dim = query.shape
    out = torch.empty_like(query)
    lse = torch.empty(batch, heads, rows, device=query.device, dtype=torch.float32)
    if rows == 0:
        return out, lse
    _cross_region_forward[_grid(plan, query)](
        query, key, value, out, lse,
        plan.query_tile_start, plan.query_tile_end, plan.query_tile_segment,
        plan.key_segments_ptr, plan.key_segment_start, plan.key_segment_end,
        rows, scale * LOG2_E,
        HEAD_DIM=head_dim, BLOCK_M=TILE_TOKENS, BLOCK_N=INNER_TOKENS,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out, lse


def cross_region_backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    merged_out: torch.Tensor,
    merged_lse: torch.Tensor,
    plan: CrossRegionPlan,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the cross-region part; every tensor compact (batch, heads, M, ...) and contiguous."""
    rows, head_dim = query.shape[2], query.shape[3]
    d_query, d_key, d_value = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
    if rows == 0:
        return d_query, d_key, d_value
    row_dot = (grad_out.float() * merged_out.float()).sum(-1).contiguous()
    merged_lse = merged_lse.contiguous()
    _cross_region_backward_query[_grid(plan, query)](
        query, key, value, grad_out, merged_lse, row_dot, d_query,
        plan.query_tile_start, plan.query_tile_end, plan.query_tile_segment,
        plan.key_segments_ptr, plan.key_segment_start, plan.key_segment_end,
        rows, scale,
        HEAD_DIM=head_dim, BLOCK_M=TILE_TOKENS, BLOCK_N=INNER_TOKENS,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    _cross_region_backward_key[_grid(plan, query)](
        query, key, value, grad_out, merged_lse, row_dot, d_key, d_value,
        plan.query_tile_start, plan.query_tile_end, plan.query_tile_segment,
        plan.query_segments_ptr, plan.query_segment_start, plan.query_segment_end,
        rows, scale,
        HEAD_DIM=head_dim, BLOCK_M=INNER_TOKENS, BLOCK_N=TILE_TOKENS,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return d_query, d_key, d_value
