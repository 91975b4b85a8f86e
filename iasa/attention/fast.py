"""Fast input-aware sparse attention: the own frame through a dense kernel, the rest region to region.

The rule (iasa.attention.layout) splits into two disjoint key sets per query token:
- A, own frame: dense attention inside every latent frame, run as one batch of frames through cuDNN
  SDPA (the dense kernel's own efficiency), returning the output and its log-sum-exp;
- B, cross region: region tokens against the same region in the frames chosen for theirs
  (fast_triton on CUDA, a masked softmax elsewhere), on a compact sequence of region tokens only.
The two softmaxes are merged through their log-sum-exps (as ring attention does):
    lse = logaddexp(lse_A, lse_B),  out = exp(lse_A - lse) out_A + exp(lse_B - lse) out_B.
Background tokens and tokens with no cross-frame key keep part A unchanged. The backward runs each part's
backward with the MERGED output and log-sum-exp, which yields exactly that part's share of the gradient of
the whole softmax; the compact part's gradients are added back at their tokens.

Tensors are (batch, heads, tokens, head_dim) like SDPA, tokens in (f h w) order. CUDA: bf16 and fp16;
other devices and dtypes use the plain-PyTorch kernels (fast_math), so CPU tests cover the same logic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from iasa.attention.fast_math import masked_attention_backward, masked_attention_with_lse
from iasa.attention.fast_plan import CrossRegionPlan, prepare_fast_layout
from iasa.attention.layout import SparseLayout

__all__ = ["fast_sparse_attention", "prepare_fast_layout"]

_KERNEL_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class FrameBatching:
    """How (batch, heads, T * N, d) is seen as a batch of frames without copying where strides allow.

    frames_lead False: (batch * T, heads, N, d); True: (T, batch * heads, N, d). Contiguous
    (batch, heads, tokens, d) inputs take the second form, (batch, tokens, heads, d) views the first.
    """

    batch: int
    heads: int
    frames: int
    frames_lead: bool

    @staticmethod
    def choose(x: torch.Tensor, frames: int) -> "FrameBatching":
        batch, heads = x.shape[:2]
        split = x.unflatten(2, (frames, -1))
        stride_b, stride_h, stride_t = split.stride()[:3]
        frames_lead = not (batch == 1 or stride_b == frames * stride_t) and (heads == 1 or stride_b == heads * stride_h)
        return FrameBatching(batch, heads, frames, frames_lead)

    def to_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, heads, T * N, d) -> batch of frames (copies only when strides do not allow a view)."""
        if self.frames_lead:
            return rearrange(x, "b h (t n) d -> t (b h) n d", t=self.frames)
        return rearrange(x, "b h (t n) d -> (b t) h n d", t=self.frames)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Batch of frames (..., N[, d]) -> a (batch, heads, T, N[, d]) view of the same memory."""
        if self.frames_lead:
            return x.unflatten(1, (self.batch, self.heads)).movedim(0, 2)
        return x.unflatten(0, (self.batch, self.frames)).movedim(1, 2)


def _own_frame_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """Dense attention of a batch of frames -> (out, lse (frames, heads, N), state for the backward)."""
    if q.is_cuda and q.dtype in _KERNEL_DTYPES:
        out, lse, _, _, _, _, seed, offset, _ = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q, k, v, None, True, 0.0, False, False, scale=scale
        )
        return out, lse.squeeze(-1), (lse, seed, offset)
    out, lse = masked_attention_with_lse(q, k, v, None, scale)
    return out, lse, None


def _own_frame_backward(grad_out, q, k, v, out, lse, state, scale: float):
    if state is not None:
        cudnn_lse, seed, offset = state
        if grad_out.stride() != out.stride():
            # cuDNN reads dO with the output's layout.
            grad_out = torch.empty_like(out).copy_(grad_out)
        tokens = q.shape[2]
        return torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            grad_out, q, k, v, out, cudnn_lse, seed, offset, None, None, None, tokens, tokens, 0.0, False,
            scale=scale,
        )
    return masked_attention_backward(grad_out, q, k, v, out, lse, None, scale)


def _cross_region_allowed(plan: CrossRegionPlan) -> torch.Tensor:
    """(M, M) bool: the cross-region part's mask on the compact sequence (plain-PyTorch kernels only)."""
    frame, region = plan.token_frame, plan.token_region
    chosen = plan.frame_selection[frame[:, None], frame[None, :]]
    return chosen & (frame[:, None] != frame[None, :]) & (region[:, None] == region[None, :])


def _cross_region_forward(q, k, v, plan: CrossRegionPlan, scale: float):
    if q.is_cuda and q.dtype in _KERNEL_DTYPES:
        from iasa.attention.fast_triton import cross_region_forward

        return cross_region_forward(q, k, v, plan, scale)
    return masked_attention_with_lse(q, k, v, _cross_region_allowed(plan), scale)


def _cross_region_backward(grad_out, q, k, v, out, lse, plan: CrossRegionPlan, scale: float):
    if q.is_cuda and q.dtype in _KERNEL_DTYPES:
        from iasa.attention.fast_triton import cross_region_backward

        return cross_region_backward(grad_out, q, k, v, out, lse, plan, scale)
    return masked_attention_backward(grad_out, q, k, v, out, lse, _cross_region_allowed(plan), scale)


class _FastSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, plan: CrossRegionPlan, scale: float):
        framing = FrameBatching.choose(query, plan.num_frames)
        own_out, own_lse, own_state = _own_frame_forward(
            framing.to_frames(query), framing.to_frames(key), framing.to_frames(value), scale
        )
        out_tokens = framing.to_tokens(own_out)  # (batch, heads, T, N, d) view
        lse_tokens = framing.to_tokens(own_lse)  # (batch, heads, T, N) view
        frame, position = plan.token_frame, plan.token_position
        token_index = frame * plan.tokens_per_frame + position

        compact = [x.index_select(2, token_index) for x in (query, key, value)]
        cross_out, cross_lse = _cross_region_forward(*compact, plan, scale)
        own_out_compact = out_tokens[:, :, frame, position]
        own_lse_compact = lse_tokens[:, :, frame, position]
        merged_lse = torch.logaddexp(own_lse_compact, cross_lse)
        merged_out = (
            torch.exp(own_lse_compact - merged_lse).unsqueeze(-1) * own_out_compact
            + torch.exp(cross_lse - merged_lse).unsqueeze(-1) * cross_out
        ).to(query.dtype)
        # Written into part A's buffers, which then hold the merged output and lse for the backward.
        out_tokens[:, :, frame, position] = merged_out
        lse_tokens[:, :, frame, position] = merged_lse

        ctx.save_for_backward(query, key, value, own_out, own_lse, merged_out, merged_lse, *compact)
        ctx.plan, ctx.scale, ctx.framing, ctx.own_state = plan, scale, framing, own_state
        return rearrange(out_tokens, "b h t n d -> b h (t n) d")

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, own_out, own_lse, merged_out, merged_lse, *compact = ctx.saved_tensors
        plan, scale, framing = ctx.plan, ctx.scale, ctx.framing
        grads = _own_frame_backward(
            framing.to_frames(grad_out),
            framing.to_frames(query), framing.to_frames(key), framing.to_frames(value),
            own_out, own_lse, ctx.own_state, scale,
        )
        frame, position = plan.token_frame, plan.token_position
        token_index = frame * plan.tokens_per_frame + position
        cross_grads = _cross_region_backward(
            grad_out.index_select(2, token_index).contiguous(), *compact, merged_out, merged_lse, plan, scale
        )
        results = []
        for grad, cross_grad in zip(grads, cross_grads):
            grad_tokens = framing.to_tokens(grad)
            grad_tokens[:, :, frame, position] += cross_grad
            results.append(rearrange(grad_tokens, "b h t n d -> b h (t n) d"))
        return (*results, None, None)


def fast_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SparseLayout,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention under the layout's sparse rule. query, key, value: (batch, heads, T * N, head_dim).

    Returns (batch, heads, T * N, head_dim) in the input dtype; differentiable in all three inputs.
    The layout's plan is built on first use per (layout object, device) and cached.
    """
    if query.shape[2] != layout.num_tokens:
        raise ValueError(
            f"query has {query.shape[2]} tokens but the layout describes {layout.num_tokens} "
            f"({layout.num_frames} frames x {layout.tokens_per_frame}); build the layout for this clip's grid"
        )
    if not (query.shape == key.shape == value.shape):
        raise ValueError(f"query, key and value must share one shape, got {query.shape}, {key.shape}, {value.shape}")
    plan = prepare_fast_layout(layout, query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    return _FastSparseAttention.apply(query, key, value, plan, scale)
