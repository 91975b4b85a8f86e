"""Triton kernels of the cross-region part: region tokens attending to the same region in chosen frames.

The kernels walk the compact (frame, region)-sorted sequence of region tokens described by the plan
(fast_plan), but read and write the full tensors in place through the plan's token tables, so nothing is
gathered or scattered around them:
- forward: a flash-attention loop (online softmax, log2 domain) of one query tile over its key segments,
  then the merge with the own-frame part, written over the own-frame output and log-sum-exp:
      lse = logaddexp(lse_own, lse_cross),  out = exp(lse_own - lse) out_own + exp(lse_cross - lse) out_cross;
- backward: with the MERGED output and log-sum-exp, P = exp(S - lse) and dS = P (dP - rowsum(dO O)) give
  exactly this part's share of the whole softmax's gradients; dQ walks query tiles over key segments and
  dK, dV walk key tiles over the query segments that read them (every row has one owner: no atomics),
  each adding into the own-frame part's gradients.

Tensor arguments are strided views: inputs and dO as (batch, heads, tokens, d); the own-frame buffers
(output, lse, gradients) as (batch, heads, T, N[, d]) token views (FrameBatching.to_tokens in fast.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from iasa.attention.fast_plan import CrossRegionPlan

LOG2_E = 1.4426950408889634
# Inner tile over the rows a tile walks (keys in forward and dQ, queries in dK/dV), and launch settings.
FORWARD_INNER_TOKENS = 64
BACKWARD_INNER_TOKENS = 64
NUM_WARPS = 4
NUM_STAGES = 2


@triton.jit
def _load_rows(base, rows, row_ok, token_frame, token_position, stride_t, stride_n, stride_d, dims):
    """Rows (compact indices) of a (T, N, d) view at `base` -> (rows, d) tile, zeros past `row_ok`."""
    frame = tl.load(token_frame + rows, mask=row_ok, other=0).to(tl.int64)
    position = tl.load(token_position + rows, mask=row_ok, other=0).to(tl.int64)
    offsets = base + frame[:, None] * stride_t + position[:, None] * stride_n + dims[None, :] * stride_d
    return tl.load(offsets, mask=row_ok[:, None], other=0.0), offsets


@triton.jit
def _row_offsets(rows, row_ok, token_frame, token_position, stride_t, stride_n):
    frame = tl.load(token_frame + rows, mask=row_ok, other=0).to(tl.int64)
    position = tl.load(token_position + rows, mask=row_ok, other=0).to(tl.int64)
    return frame * stride_t + position * stride_n


@triton.jit
def _cross_region_forward_merge(
    Q, K, V, Out, Lse,
    token_frame, token_position,
    tile_start, tile_end, tile_segment, key_ptr, key_start, key_end,
    heads, tokens_per_frame,
    sq_b, sq_h, sq_n, sq_d,
    so_b, so_h, so_t, so_n, so_d,
    sl_b, sl_h, sl_t, sl_n,
    scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    batch_head = tl.program_id(1)
    b = (batch_head // heads).to(tl.int64)
    h = (batch_head % heads).to(tl.int64)
    qkv_base = b * sq_b + h * sq_h
    row_first = tl.load(tile_start + tile)
    row_stop = tl.load(tile_end + tile)
    segment = tl.load(tile_segment + tile)
    rows = row_first + tl.arange(0, BLOCK_M)
    row_ok = rows < row_stop
    dims = tl.arange(0, HEAD_DIM)
    q, _ = _load_rows(Q + qkv_base, rows, row_ok, token_frame, token_position,
                      tokens_per_frame * sq_n, sq_n, sq_d, dims)

    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for edge in range(tl.load(key_ptr + segment), tl.load(key_ptr + segment + 1)):
        col_stop = tl.load(key_end + edge)
        for col_first in range(tl.load(key_start + edge), col_stop, BLOCK_N):
            cols = col_first + tl.arange(0, BLOCK_N)
            col_ok = cols < col_stop
            k, _ = _load_rows(K + qkv_base, cols, col_ok, token_frame, token_position,
                              tokens_per_frame * sq_n, sq_n, sq_d, dims)
            v, _ = _load_rows(V + qkv_base, cols, col_ok, token_frame, token_position,
                              tokens_per_frame * sq_n, sq_n, sq_d, dims)
            scores = tl.dot(q, tl.trans(k)) * scale_log2
            scores = tl.where(col_ok[None, :], scores, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(scores, 1))
            rescale = tl.exp2(row_max - new_max)
            p = tl.exp2(scores - new_max[:, None])
            row_sum = row_sum * rescale + tl.sum(p, 1)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
            row_max = new_max

    # Merge in the log2 domain; a row with no cross key has row_sum 0 and keeps the own-frame values.
    own_out, out_offsets = _load_rows(Out + b * so_b + h * so_h, rows, row_ok, token_frame, token_position,
                                      so_t, so_n, so_d, dims)
    lse_offsets = b * sl_b + h * sl_h + _row_offsets(rows, row_ok, token_frame, token_position, sl_t, sl_n)
    own_lse_log2 = tl.load(Lse + lse_offsets, mask=row_ok, other=0.0) * 1.4426950408889634
    cross_lse_log2 = row_max + tl.log2(row_sum)
    top = tl.maximum(own_lse_log2, cross_lse_log2)
    lse_log2 = top + tl.log2(tl.exp2(own_lse_log2 - top) + tl.exp2(cross_lse_log2 - top))
    out = tl.exp2(own_lse_log2 - lse_log2)[:, None] * own_out.to(tl.float32)
    out += tl.exp2(row_max - lse_log2)[:, None] * acc
    tl.store(out_offsets, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(Lse + lse_offsets, lse_log2 * 0.6931471805599453, mask=row_ok)


@triton.jit
def _row_dot(
    dO, Out, RowDot, token_frame, token_position, num_rows, heads, tokens_per_frame,
    sg_b, sg_h, sg_n, sg_d,
    so_b, so_h, so_t, so_n, so_d,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """RowDot[b, h, m] = sum_d dO * O at compact row m (the softmax backward's D term)."""
    batch_head = tl.program_id(1)
    b = (batch_head // heads).to(tl.int64)
    h = (batch_head % heads).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_rows
    dims = tl.arange(0, HEAD_DIM)
    d_out, _ = _load_rows(dO + b * sg_b + h * sg_h, rows, row_ok, token_frame, token_position,
                          tokens_per_frame * sg_n, sg_n, sg_d, dims)
    out, _ = _load_rows(Out + b * so_b + h * so_h, rows, row_ok, token_frame, token_position,
                        so_t, so_n, so_d, dims)
    row_dot = tl.sum(d_out.to(tl.float32) * out.to(tl.float32), 1)
    tl.store(RowDot + batch_head.to(tl.int64) * num_rows + rows, row_dot, mask=row_ok)


@triton.jit
def _cross_region_backward_query(
    Q, K, V, dO, Lse, RowDot, dQ,
    token_frame, token_position,
    tile_start, tile_end, tile_segment, key_ptr, key_start, key_end,
    num_rows, heads, tokens_per_frame,
    sq_b, sq_h, sq_n, sq_d,
    sg_b, sg_h, sg_n, sg_d,
    sl_b, sl_h, sl_t, sl_n,
    sdq_b, sdq_h, sdq_t, sdq_n, sdq_d,
    scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    batch_head = tl.program_id(1)
    b = (batch_head // heads).to(tl.int64)
    h = (batch_head % heads).to(tl.int64)
    qkv_base = b * sq_b + h * sq_h
    row_first = tl.load(tile_start + tile)
    row_stop = tl.load(tile_end + tile)
    segment = tl.load(tile_segment + tile)
    rows = row_first + tl.arange(0, BLOCK_M)
    row_ok = rows < row_stop
    dims = tl.arange(0, HEAD_DIM)
    q, _ = _load_rows(Q + qkv_base, rows, row_ok, token_frame, token_position,
                      tokens_per_frame * sq_n, sq_n, sq_d, dims)
    d_out, _ = _load_rows(dO + b * sg_b + h * sg_h, rows, row_ok, token_frame, token_position,
                          tokens_per_frame * sg_n, sg_n, sg_d, dims)
    lse_offsets = b * sl_b + h * sl_h + _row_offsets(rows, row_ok, token_frame, token_position, sl_t, sl_n)
    lse_log2 = tl.load(Lse + lse_offsets, mask=row_ok, other=float("inf")) * 1.4426950408889634
    row_dot = tl.load(RowDot + batch_head.to(tl.int64) * num_rows + rows, mask=row_ok, other=0.0)
    scale_log2 = scale * 1.4426950408889634

    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for edge in range(tl.load(key_ptr + segment), tl.load(key_ptr + segment + 1)):
        col_stop = tl.load(key_end + edge)
        for col_first in range(tl.load(key_start + edge), col_stop, BLOCK_N):
            cols = col_first + tl.arange(0, BLOCK_N)
            col_ok = cols < col_stop
            k, _ = _load_rows(K + qkv_base, cols, col_ok, token_frame, token_position,
                              tokens_per_frame * sq_n, sq_n, sq_d, dims)
            v, _ = _load_rows(V + qkv_base, cols, col_ok, token_frame, token_position,
                              tokens_per_frame * sq_n, sq_n, sq_d, dims)
            p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse_log2[:, None])
            p = tl.where(col_ok[None, :], p, 0.0)
            d_p = tl.dot(d_out, tl.trans(v))
            d_scores = p * (d_p - row_dot[:, None])
            acc += tl.dot(d_scores.to(k.dtype), k)
    own_grad, grad_offsets = _load_rows(dQ + b * sdq_b + h * sdq_h, rows, row_ok, token_frame, token_position,
                                        sdq_t, sdq_n, sdq_d, dims)
    tl.store(grad_offsets, (own_grad.to(tl.float32) + acc * scale).to(dQ.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _cross_region_backward_key(
    Q, K, V, dO, Lse, RowDot, dK, dV,
    token_frame, token_position,
    tile_start, tile_end, tile_segment, query_ptr, query_start, query_end,
    num_rows, heads, tokens_per_frame,
    sq_b, sq_h, sq_n, sq_d,
    sg_b, sg_h, sg_n, sg_d,
    sl_b, sl_h, sl_t, sl_n,
    sdk_b, sdk_h, sdk_t, sdk_n, sdk_d,
    scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    batch_head = tl.program_id(1)
    b = (batch_head // heads).to(tl.int64)
    h = (batch_head % heads).to(tl.int64)
    qkv_base = b * sq_b + h * sq_h
    col_first = tl.load(tile_start + tile)
    col_stop = tl.load(tile_end + tile)
    segment = tl.load(tile_segment + tile)
    cols = col_first + tl.arange(0, BLOCK_N)
    col_ok = cols < col_stop
    dims = tl.arange(0, HEAD_DIM)
    k, _ = _load_rows(K + qkv_base, cols, col_ok, token_frame, token_position,
                      tokens_per_frame * sq_n, sq_n, sq_d, dims)
    v, _ = _load_rows(V + qkv_base, cols, col_ok, token_frame, token_position,
                      tokens_per_frame * sq_n, sq_n, sq_d, dims)
    scale_log2 = scale * 1.4426950408889634

    d_key = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    d_value = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for edge in range(tl.load(query_ptr + segment), tl.load(query_ptr + segment + 1)):
        row_stop = tl.load(query_end + edge)
        for row_first in range(tl.load(query_start + edge), row_stop, BLOCK_M):
            rows = row_first + tl.arange(0, BLOCK_M)
            row_ok = rows < row_stop
            q, _ = _load_rows(Q + qkv_base, rows, row_ok, token_frame, token_position,
                              tokens_per_frame * sq_n, sq_n, sq_d, dims)
            d_out, _ = _load_rows(dO + b * sg_b + h * sg_h, rows, row_ok, token_frame, token_position,
                                  tokens_per_frame * sg_n, sg_n, sg_d, dims)
            lse_offsets = b * sl_b + h * sl_h + _row_offsets(rows, row_ok, token_frame, token_position, sl_t, sl_n)
            # Rows past the segment read lse = +inf, so their probabilities are exactly 0.
            lse_log2 = tl.load(Lse + lse_offsets, mask=row_ok, other=float("inf")) * 1.4426950408889634
            row_dot = tl.load(RowDot + batch_head.to(tl.int64) * num_rows + rows, mask=row_ok, other=0.0)
            p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse_log2[:, None])
            d_value += tl.dot(tl.trans(p).to(d_out.dtype), d_out)
            d_p = tl.dot(d_out, tl.trans(v))
            d_scores = p * (d_p - row_dot[:, None])
            d_key += tl.dot(tl.trans(d_scores).to(q.dtype), q)
    own_dk, dk_offsets = _load_rows(dK + b * sdk_b + h * sdk_h, cols, col_ok, token_frame, token_position,
                                    sdk_t, sdk_n, sdk_d, dims)
    tl.store(dk_offsets, (own_dk.to(tl.float32) + d_key * scale).to(dK.dtype.element_ty), mask=col_ok[:, None])
    own_dv, dv_offsets = _load_rows(dV + b * sdk_b + h * sdk_h, cols, col_ok, token_frame, token_position,
                                    sdk_t, sdk_n, sdk_d, dims)
    tl.store(dv_offsets, (own_dv.to(tl.float32) + d_value).to(dV.dtype.element_ty), mask=col_ok[:, None])


def cross_region_forward_merge(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out_tokens: torch.Tensor,
    lse_tokens: torch.Tensor,
    plan: CrossRegionPlan,
    scale: float,
) -> None:
    """Add the cross-region part to the own-frame result, in place.

    query, key, value: (batch, heads, T * N, d), one stride pattern; out_tokens: (batch, heads, T, N, d)
    own-frame output, lse_tokens: (batch, heads, T, N) float32 own-frame log-sum-exp; both become merged.
    """
    if plan.num_region_tokens == 0:
        return
    batch, heads, _, head_dim = query.shape
    _cross_region_forward_merge[(plan.num_tiles, batch * heads)](
        query, key, value, out_tokens, lse_tokens,
        plan.token_frame32, plan.token_position32,
        plan.query_tile_start, plan.query_tile_end, plan.query_tile_segment,
        plan.key_segments_ptr, plan.key_segment_start, plan.key_segment_end,
        heads, plan.tokens_per_frame,
        *query.stride(), *out_tokens.stride(), *lse_tokens.stride(),
        scale * LOG2_E,
        HEAD_DIM=head_dim, BLOCK_M=plan.tile_tokens, BLOCK_N=FORWARD_INNER_TOKENS,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )


def cross_region_backward_accumulate(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out_tokens: torch.Tensor,
    lse_tokens: torch.Tensor,
    grad_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    plan: CrossRegionPlan,
    scale: float,
) -> None:
    """Add the cross-region part's gradients to the own-frame gradients, in place.

    grad_out: (batch, heads, T * N, d); out_tokens, lse_tokens: the MERGED output and log-sum-exp as
    token views; grad_tokens: dQ, dK, dV as (batch, heads, T, N, d) views with one stride pattern.
    """
    rows = plan.num_region_tokens
    if rows == 0:
        return
    batch, heads, _, head_dim = query.shape
    d_query, d_key, d_value = grad_tokens
    if d_key.stride() != d_value.stride():
        raise ValueError(f"dK and dV must share strides, got {d_key.stride()} and {d_value.stride()}")
    row_dot = torch.empty(batch * heads, rows, device=query.device, dtype=torch.float32)
    _row_dot[(triton.cdiv(rows, plan.tile_tokens), batch * heads)](
        grad_out, out_tokens, row_dot, plan.token_frame32, plan.token_position32, rows, heads,
        plan.tokens_per_frame, *grad_out.stride(), *out_tokens.stride(),
        HEAD_DIM=head_dim, BLOCK_M=plan.tile_tokens, num_warps=NUM_WARPS,
    )
    shared = (
        plan.token_frame32, plan.token_position32,
        plan.query_tile_start, plan.query_tile_end, plan.query_tile_segment,
    )
    strides = (*query.stride(), *grad_out.stride(), *lse_tokens.stride())
    _cross_region_backward_query[(plan.num_tiles, batch * heads)](
        query, key, value, grad_out, lse_tokens, row_dot, d_query, *shared,
        plan.key_segments_ptr, plan.key_segment_start, plan.key_segment_end,
        rows, heads, plan.tokens_per_frame, *strides, *d_query.stride(), scale,
        HEAD_DIM=head_dim, BLOCK_M=plan.tile_tokens, BLOCK_N=BACKWARD_INNER_TOKENS,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    _cross_region_backward_key[(plan.num_tiles, batch * heads)](
        query, key, value, grad_out, lse_tokens, row_dot, d_key, d_value, *shared,
        plan.query_segments_ptr, plan.query_segment_start, plan.query_segment_end,
        rows, heads, plan.tokens_per_frame, *strides, *d_key.stride(), scale,
        HEAD_DIM=head_dim, BLOCK_M=BACKWARD_INNER_TOKENS, BLOCK_N=plan.tile_tokens,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
