"""Triton kernels of the cross-region part: region tokens attending to the same region in chosen frames.

The kernels walk the compact (frame, region)-sorted region tokens described by the plan (fast_plan),
reading and writing the full tensors in place through the plan's token tables, so nothing is gathered
or scattered around them; key lists are walked in full inner tiles whatever the segment sizes:
- forward: a flash-attention loop (online softmax, log2 domain) of one query tile over its key segments,
  then the merge with the own-frame part, written over the own-frame output and log-sum-exp:
      lse = logaddexp(lse_own, lse_cross),  out = exp(lse_own - lse) out_own + exp(lse_cross - lse) out_cross;
- backward: with the MERGED output and log-sum-exp, P = exp(S - lse) and dS = P (dP - rowsum(dO O)) give
  exactly this part's share of the whole softmax's gradients; dQ walks query tiles over key segments and
  dK, dV walk key tiles over the query segments that read them (every row has one owner: no atomics),
  each adding into the own-frame part's gradients.

Tensor arguments are strided views with a contiguous last dimension: inputs and dO as
(batch, heads, tokens, d); the own-frame buffers (output, lse, gradients) as (batch, heads, T, N[, d])
token views (FrameBatching.to_tokens in fast.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from iasa.attention.fast_plan import CrossRegionPlan

LOG2_E = 1.4426950408889634
# Forward, per (head dim, query tile rows): (inner tile over keys, warps, pipeline stages). Backward, per
# head dim: (inner tile over the rows a tile walks -- keys in dQ, queries in dK/dV --, warps, stages).
# From sweeps at 480x832 and 720x1280 x81, 40 heads, bf16 on an H200: 3 stages beat 2 by 5-9 % in the
# forward, 8 warps or 128-key tiles lost 5-20 %. Other power-of-two head dims use the 128 entries, other
# tile rows the 64-row entry.
FORWARD_LAUNCH = {(64, 128): (64, 4, 3), (64, 64): (64, 4, 3), (128, 128): (64, 4, 3), (128, 64): (64, 4, 3)}
BACKWARD_LAUNCH = {64: (64, 4, 3), 128: (64, 4, 3)}


def _check_head_dim(head_dim: int) -> int:
    """The launch tables' head-dim key of a supported head dim."""
    if head_dim < 16 or head_dim > 256 or head_dim & (head_dim - 1):
        raise ValueError(f"the fast kernels take a power-of-two head dim in [16, 256], got {head_dim}")
    return head_dim if head_dim in BACKWARD_LAUNCH else 128


def _forward_launch(head_dim: int, tile_rows: int) -> tuple[int, int, int]:
    key = _check_head_dim(head_dim)
    return FORWARD_LAUNCH.get((key, tile_rows), FORWARD_LAUNCH[(key, 64)])


@triton.jit
def _program_batch_head(heads):
    """This program's (batch * heads) index (grid axis 1) and its batch and head as int64."""
    batch_head = tl.program_id(1)
    return batch_head, (batch_head // heads).to(tl.int64), (batch_head % heads).to(tl.int64)


@triton.jit
def _program_tile(token_index, tile_start, tile_end, tile_segment, ROWS: tl.constexpr):
    """This program's tile (grid axis 0): its compact rows, which of them are in the tile, their tokens
    (int64) and the tile's segment."""
    tile = tl.program_id(0)
    rows = tl.load(tile_start + tile) + tl.arange(0, ROWS)
    row_ok = rows < tl.load(tile_end + tile)
    token = tl.load(token_index + rows, mask=row_ok, other=0).to(tl.int64)
    return rows, row_ok, token, tl.load(tile_segment + tile)


@triton.jit
def _token_view_offsets(token, b, h, stride_b, stride_h, stride_t, stride_n, tokens_per_frame):
    """Offsets of tokens (int64) in a (batch, heads, T, N[, d]) token view, without the d term."""
    frame, position = token // tokens_per_frame, token % tokens_per_frame
    return b * stride_b + h * stride_h + frame * stride_t + position * stride_n


@triton.jit
def _attend_key_tile(
    q, acc, row_max, row_sum, key_head, value_head, key_list_token, first, list_stop, dims, sq_n, scale_log2,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
):
    """One step of the online softmax (log2 domain) over the key tile at key_list_token[first:]."""
    cols = first + tl.arange(0, BLOCK_N)
    if MASKED:
        col_ok = cols < list_stop
        key_token = tl.load(key_list_token + cols, mask=col_ok, other=0)
    else:
        key_token = tl.load(key_list_token + cols)
    # 32-bit offsets within one (batch, head): fewer integer instructions per gathered element. Columns
    # past the list read token 0 (a valid row) and are masked out of the scores.
    key_offsets = key_token[:, None] * sq_n + dims[None, :]
    k = tl.load(key_head + key_offsets)
    v = tl.load(value_head + key_offsets)
    scores = tl.dot(q, tl.trans(k)) * scale_log2
    if MASKED:
        scores = tl.where(col_ok[None, :], scores, float("-inf"))
    new_max = tl.maximum(row_max, tl.max(scores, 1))
    rescale = tl.exp2(row_max - new_max)
    row_sum = row_sum * rescale
    acc = acc * rescale[:, None]
    row_max = new_max
    p = tl.exp2(scores - row_max[:, None])
    row_sum += tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, row_max, row_sum


@triton.jit
def _cross_region_forward_merge(
    Q, K, V, Out, Lse,
    token_index, tile_start, tile_end, tile_segment, key_list_ptr, key_list_token,
    heads, tokens_per_frame,
    sq_b, sq_h, sq_n,
    so_b, so_h, so_t, so_n,
    sl_b, sl_h, sl_t, sl_n,
    scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    _, b, h = _program_batch_head(heads)
    rows, row_ok, token, segment = _program_tile(token_index, tile_start, tile_end, tile_segment, BLOCK_M)
    qkv_base = b * sq_b + h * sq_h
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + qkv_base + token[:, None] * sq_n + dims[None, :], mask=row_ok[:, None], other=0.0)

    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    key_head, value_head = K + qkv_base, V + qkv_base
    list_start = tl.load(key_list_ptr + segment)
    list_stop = tl.load(key_list_ptr + segment + 1)
    # Full key tiles without masks, then the partial last one.
    full_stop = list_start + (list_stop - list_start) // BLOCK_N * BLOCK_N
    for first in range(list_start, full_stop, BLOCK_N):
        acc, row_max, row_sum = _attend_key_tile(
            q, acc, row_max, row_sum, key_head, value_head, key_list_token, first, list_stop, dims, sq_n,
            scale_log2, BLOCK_N, False,
        )
    if full_stop < list_stop:
        acc, row_max, row_sum = _attend_key_tile(
            q, acc, row_max, row_sum, key_head, value_head, key_list_token, full_stop, list_stop, dims, sq_n,
            scale_log2, BLOCK_N, True,
        )

    # Merge in the log2 domain; a row with no cross key has row_sum 0 and keeps the own-frame values.
    out_offsets = _token_view_offsets(token, b, h, so_b, so_h, so_t, so_n, tokens_per_frame)[:, None] + dims[None, :]
    own_out = tl.load(Out + out_offsets, mask=row_ok[:, None], other=0.0)
    lse_offsets = _token_view_offsets(token, b, h, sl_b, sl_h, sl_t, sl_n, tokens_per_frame)
    own_lse_log2 = tl.load(Lse + lse_offsets, mask=row_ok, other=0.0) * 1.4426950408889634
    cross_lse_log2 = row_max + tl.log2(row_sum)
    top = tl.maximum(own_lse_log2, cross_lse_log2)
    lse_log2 = top + tl.log2(tl.exp2(own_lse_log2 - top) + tl.exp2(cross_lse_log2 - top))
    out = tl.exp2(own_lse_log2 - lse_log2)[:, None] * own_out.to(tl.float32)
    out += tl.exp2(row_max - lse_log2)[:, None] * acc
    tl.store(Out + out_offsets, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(Lse + lse_offsets, lse_log2 * 0.6931471805599453, mask=row_ok)


@triton.jit(do_not_specialize=["num_rows"])
def _row_statistics(
    dO, Out, Lse, RowDot, LseLog2,
    token_index, num_rows, heads, tokens_per_frame,
    sg_b, sg_h, sg_n,
    so_b, so_h, so_t, so_n,
    sl_b, sl_h, sl_t, sl_n,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Compact (batch * heads, M) arrays of the backward's per-row terms: rowsum(dO * O) and lse * log2(e)."""
    batch_head, b, h = _program_batch_head(heads)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_rows
    dims = tl.arange(0, HEAD_DIM)
    token = tl.load(token_index + rows, mask=row_ok, other=0).to(tl.int64)
    d_out = tl.load(dO + b * sg_b + h * sg_h + token[:, None] * sg_n + dims[None, :], mask=row_ok[:, None], other=0.0)
    out_offsets = _token_view_offsets(token, b, h, so_b, so_h, so_t, so_n, tokens_per_frame)[:, None] + dims[None, :]
    out = tl.load(Out + out_offsets, mask=row_ok[:, None], other=0.0)
    lse_offsets = _token_view_offsets(token, b, h, sl_b, sl_h, sl_t, sl_n, tokens_per_frame)
    lse = tl.load(Lse + lse_offsets, mask=row_ok, other=0.0)
    compact = batch_head.to(tl.int64) * num_rows + rows
    tl.store(RowDot + compact, tl.sum(d_out.to(tl.float32) * out.to(tl.float32), 1), mask=row_ok)
    tl.store(LseLog2 + compact, lse * 1.4426950408889634, mask=row_ok)


@triton.jit(do_not_specialize=["num_rows"])
def _cross_region_backward_query(
    Q, K, V, dO, LseLog2, RowDot, dQ,
    token_index, tile_start, tile_end, tile_segment, key_list_ptr, key_list_token,
    num_rows, heads, tokens_per_frame,
    sq_b, sq_h, sq_n,
    sg_b, sg_h, sg_n,
    sdq_b, sdq_h, sdq_t, sdq_n,
    scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    batch_head, b, h = _program_batch_head(heads)
    rows, row_ok, token, segment = _program_tile(token_index, tile_start, tile_end, tile_segment, BLOCK_M)
    qkv_base = b * sq_b + h * sq_h
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + qkv_base + token[:, None] * sq_n + dims[None, :], mask=row_ok[:, None], other=0.0)
    d_out = tl.load(dO + b * sg_b + h * sg_h + token[:, None] * sg_n + dims[None, :], mask=row_ok[:, None], other=0.0)
    compact = batch_head.to(tl.int64) * num_rows + rows
    lse_log2 = tl.load(LseLog2 + compact, mask=row_ok, other=float("inf"))
    row_dot = tl.load(RowDot + compact, mask=row_ok, other=0.0)
    scale_log2 = scale * 1.4426950408889634

    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    key_head, value_head = K + qkv_base, V + qkv_base
    list_stop = tl.load(key_list_ptr + segment + 1)
    for first in range(tl.load(key_list_ptr + segment), list_stop, BLOCK_N):
        cols = first + tl.arange(0, BLOCK_N)
        col_ok = cols < list_stop
        key_token = tl.load(key_list_token + cols, mask=col_ok, other=0)
        key_offsets = key_token[:, None] * sq_n + dims[None, :]
        k = tl.load(key_head + key_offsets, mask=col_ok[:, None], other=0.0)
        v = tl.load(value_head + key_offsets, mask=col_ok[:, None], other=0.0)
        p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse_log2[:, None])
        p = tl.where(col_ok[None, :], p, 0.0)
        d_p = tl.dot(d_out, tl.trans(v))
        d_scores = p * (d_p - row_dot[:, None])
        acc += tl.dot(d_scores.to(k.dtype), k)
    grad_rows = _token_view_offsets(token, b, h, sdq_b, sdq_h, sdq_t, sdq_n, tokens_per_frame)
    grad_offsets = grad_rows[:, None] + dims[None, :]
    own_grad = tl.load(dQ + grad_offsets, mask=row_ok[:, None], other=0.0)
    tl.store(dQ + grad_offsets, (own_grad.to(tl.float32) + acc * scale).to(dQ.dtype.element_ty), mask=row_ok[:, None])


@triton.jit(do_not_specialize=["num_rows"])
def _cross_region_backward_key(
    Q, K, V, dO, LseLog2, RowDot, dK, dV,
    token_index, tile_start, tile_end, tile_segment, query_list_ptr, query_list, query_list_token,
    num_rows, heads, tokens_per_frame,
    sq_b, sq_h, sq_n,
    sg_b, sg_h, sg_n,
    sdk_b, sdk_h, sdk_t, sdk_n,
    scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    batch_head, b, h = _program_batch_head(heads)
    _, col_ok, token, segment = _program_tile(token_index, tile_start, tile_end, tile_segment, BLOCK_N)
    qkv_base = b * sq_b + h * sq_h
    grad_out_base = b * sg_b + h * sg_h
    compact_base = batch_head.to(tl.int64) * num_rows
    dims = tl.arange(0, HEAD_DIM)
    key_offsets = qkv_base + token[:, None] * sq_n + dims[None, :]
    k = tl.load(K + key_offsets, mask=col_ok[:, None], other=0.0)
    v = tl.load(V + key_offsets, mask=col_ok[:, None], other=0.0)
    scale_log2 = scale * 1.4426950408889634

    d_key = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    d_value = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    query_head, grad_out_head = Q + qkv_base, dO + grad_out_base
    lse_head, row_dot_head = LseLog2 + compact_base, RowDot + compact_base
    list_stop = tl.load(query_list_ptr + segment + 1)
    for first in range(tl.load(query_list_ptr + segment), list_stop, BLOCK_M):
        entries = first + tl.arange(0, BLOCK_M)
        entry_ok = entries < list_stop
        query_token = tl.load(query_list_token + entries, mask=entry_ok, other=0)
        query_row = tl.load(query_list + entries, mask=entry_ok, other=0)
        q = tl.load(query_head + query_token[:, None] * sq_n + dims[None, :], mask=entry_ok[:, None], other=0.0)
        d_out = tl.load(grad_out_head + query_token[:, None] * sg_n + dims[None, :], mask=entry_ok[:, None], other=0.0)
        # Entries past the list read lse = +inf, so their probabilities are exactly 0.
        lse_log2 = tl.load(lse_head + query_row, mask=entry_ok, other=float("inf"))
        row_dot = tl.load(row_dot_head + query_row, mask=entry_ok, other=0.0)
        p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse_log2[:, None])
        d_value += tl.dot(tl.trans(p).to(d_out.dtype), d_out)
        d_p = tl.dot(d_out, tl.trans(v))
        d_scores = p * (d_p - row_dot[:, None])
        d_key += tl.dot(tl.trans(d_scores).to(q.dtype), q)
    grad_rows = _token_view_offsets(token, b, h, sdk_b, sdk_h, sdk_t, sdk_n, tokens_per_frame)
    grad_offsets = grad_rows[:, None] + dims[None, :]
    own_dk = tl.load(dK + grad_offsets, mask=col_ok[:, None], other=0.0)
    tl.store(dK + grad_offsets, (own_dk.to(tl.float32) + d_key * scale).to(dK.dtype.element_ty), mask=col_ok[:, None])
    own_dv = tl.load(dV + grad_offsets, mask=col_ok[:, None], other=0.0)
    tl.store(dV + grad_offsets, (own_dv.to(tl.float32) + d_value).to(dV.dtype.element_ty), mask=col_ok[:, None])


def _rows_strides(x: torch.Tensor) -> tuple[int, ...]:
    """Strides of every dimension but the last, which the kernels require to be 1 (rows of head_dim)."""
    if x.stride(-1) != 1:
        raise ValueError(f"the kernels need a contiguous last dimension, got strides {x.stride()}")
    return x.stride()[:-1]


def _check_32bit_rows(x: torch.Tensor) -> None:
    """The kernels address the rows of one (batch, head) of a (batch, heads, tokens, d) tensor in 32 bits."""
    if (x.shape[2] - 1) * x.stride(2) + x.shape[3] >= 2**31:
        raise ValueError(
            f"{x.shape[2]} tokens with a token stride of {x.stride(2)} exceed the kernels' 32-bit row offsets; "
            "pass (batch, heads, tokens, head_dim) contiguous tensors"
        )


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
    _check_32bit_rows(query)
    batch, heads, _, head_dim = query.shape
    for tiling in plan.forward_tilings:
        if tiling.count == 0:
            continue
        inner, warps, stages = _forward_launch(head_dim, tiling.tokens)
        _cross_region_forward_merge[(tiling.count, batch * heads)](
            query, key, value, out_tokens, lse_tokens,
            plan.token_index32, tiling.start, tiling.end, tiling.segment,
            plan.key_list_ptr, plan.key_list_token,
            heads, plan.tokens_per_frame,
            *_rows_strides(query), *_rows_strides(out_tokens), *lse_tokens.stride(),
            scale * LOG2_E,
            HEAD_DIM=head_dim, BLOCK_M=tiling.tokens, BLOCK_N=inner, num_warps=warps, num_stages=stages,
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
    token views; grad_tokens: dQ, dK, dV as (batch, heads, T, N, d) views, dK and dV with one stride pattern.
    """
    rows = plan.num_region_tokens
    if rows == 0:
        return
    _check_32bit_rows(query)
    _check_32bit_rows(grad_out)
    batch, heads, _, head_dim = query.shape
    d_query, d_key, d_value = grad_tokens
    if d_key.stride() != d_value.stride():
        raise ValueError(f"dK and dV must share strides, got {d_key.stride()} and {d_value.stride()}")
    row_dot = torch.empty(batch * heads, rows, device=query.device, dtype=torch.float32)
    lse_log2 = torch.empty_like(row_dot)
    tiling = plan.backward_tiling
    inner, warps, stages = BACKWARD_LAUNCH[_check_head_dim(head_dim)]
    _row_statistics[(triton.cdiv(rows, tiling.tokens), batch * heads)](
        grad_out, out_tokens, lse_tokens, row_dot, lse_log2,
        plan.token_index32, rows, heads, plan.tokens_per_frame,
        *_rows_strides(grad_out), *_rows_strides(out_tokens), *lse_tokens.stride(),
        HEAD_DIM=head_dim, BLOCK_M=tiling.tokens, num_warps=warps,
    )
    tiles = (plan.token_index32, tiling.start, tiling.end, tiling.segment)
    sizes = (rows, heads, plan.tokens_per_frame, *_rows_strides(query), *_rows_strides(grad_out))
    _cross_region_backward_query[(tiling.count, batch * heads)](
        query, key, value, grad_out, lse_log2, row_dot, d_query,
        *tiles, plan.key_list_ptr, plan.key_list_token,
        *sizes, *_rows_strides(d_query), scale,
        HEAD_DIM=head_dim, BLOCK_M=tiling.tokens, BLOCK_N=inner, num_warps=warps, num_stages=stages,
    )
    _cross_region_backward_key[(tiling.count, batch * heads)](
        query, key, value, grad_out, lse_log2, row_dot, d_key, d_value,
        *tiles, plan.query_list_ptr, plan.query_list, plan.query_list_token,
        *sizes, *_rows_strides(d_key), scale,
        HEAD_DIM=head_dim, BLOCK_M=inner, BLOCK_N=tiling.tokens, num_warps=warps, num_stages=stages,
    )
