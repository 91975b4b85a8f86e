"""Fast input-aware sparse attention: the own frame through a dense kernel, the rest region to region.

The rule's class table (iasa.attention.masks) splits into two disjoint key sets per query token
(fast_plan.cross_frame_part):
- A, own frame: dense attention inside every latent frame, run as one batch of frames through cuDNN
  SDPA (the dense kernel's own efficiency), returning the output and its log-sum-exp;
- B, cross region: the table's cross-frame part, region tokens against the same region in the frames
  chosen for theirs (fast_triton on CUDA, a masked softmax elsewhere), walking only those tokens and the
  key lists fast_plan derives from the table.
The two softmaxes are merged through their log-sum-exps (as ring attention does):
    lse = logaddexp(lse_A, lse_B),  out = exp(lse_A - lse) out_A + exp(lse_B - lse) out_B.
Background tokens and tokens with no cross-frame key keep part A unchanged. The backward runs each part's
backward with the MERGED output and log-sum-exp, which yields exactly that part's share of the gradient of
the whole softmax; the compact part's gradients are added back at their tokens.

Tensors are (batch, heads, tokens, head_dim) like SDPA, tokens in (f h w) order. CUDA: bf16 and fp16,
power-of-two head dims (64 and 128 tuned); other devices and dtypes use the plain-PyTorch kernels
(fast_math: dense per-frame scores, for tests and small clips), so CPU tests cover the same logic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange

from iasa.attention import fast_math
from iasa.attention.fast_plan import CrossRegionPlan, prepare_fast_layout
from iasa.attention.layout import SparseLayout

__all__ = ["fast_sparse_attention", "forward_parts", "prepare_fast_layout"]

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
    """Dense attention of a batch of frames -> (out, lse (frames, heads, N), kernel tensors the backward
    needs: cuDNN's own lse (frames, heads, N, 1), seed and offset; none for the plain kernel)."""
    if q.is_cuda and q.dtype in _KERNEL_DTYPES:
        out, lse, _, _, _, _, seed, offset, _ = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q, k, v, None, True, 0.0, False, False, scale=scale
        )
        return out, lse.squeeze(-1), (lse, seed, offset)
    out, lse = fast_math.masked_attention_with_lse(q, k, v, None, scale)
    return out, lse, ()


def _own_frame_backward(grad_out, q, k, v, out, lse, kernel_tensors: tuple[torch.Tensor, ...], scale: float):
    if kernel_tensors:
        cudnn_lse, seed, offset = kernel_tensors
        if grad_out.stride() != out.stride():
            # cuDNN reads dO with the output's layout.
            grad_out = torch.empty_like(out).copy_(grad_out)
        tokens = q.shape[2]
        return torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            grad_out, q, k, v, out, cudnn_lse, seed, offset, None, None, None, tokens, tokens, 0.0, False,
            scale=scale,
        )
    return fast_math.masked_attention_backward(grad_out, q, k, v, out, lse, None, scale)


def _cross_region_kernels(x: torch.Tensor):
    """The cross-region part's (forward_merge, backward_accumulate) for this tensor's device and dtype."""
    if x.is_cuda and x.dtype in _KERNEL_DTYPES:
        from iasa.attention import fast_triton

        return fast_triton.cross_region_forward_merge, fast_triton.cross_region_backward_accumulate
    return fast_math.cross_region_forward_merge, fast_math.cross_region_backward_accumulate


class _FastSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, plan: CrossRegionPlan, scale: float):
        framing = FrameBatching.choose(query, plan.num_frames)
        own_out, own_lse, own_kernel_tensors = _own_frame_forward(
            framing.to_frames(query), framing.to_frames(key), framing.to_frames(value), scale
        )
        # Part A's buffers take the merged output and lse in place; the backward reads them from there.
        out_tokens = framing.to_tokens(own_out)  # (batch, heads, T, N, d) view
        forward_merge, _ = _cross_region_kernels(query)
        forward_merge(query, key, value, out_tokens, framing.to_tokens(own_lse), plan, scale)

        # Every tensor goes through save_for_backward, so activation checkpointing can free and recompute it.
        ctx.save_for_backward(query, key, value, own_out, own_lse, *own_kernel_tensors)
        ctx.plan, ctx.scale, ctx.framing = plan, scale, framing
        return rearrange(out_tokens, "b h t n d -> b h (t n) d")

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, own_out, own_lse, *own_kernel_tensors = ctx.saved_tensors
        framing = ctx.framing
        if grad_out.stride(-1) != 1:
            grad_out = grad_out.contiguous()
        grads = _own_frame_backward(
            framing.to_frames(grad_out),
            framing.to_frames(query), framing.to_frames(key), framing.to_frames(value),
            own_out, own_lse, own_kernel_tensors, ctx.scale,
        )
        grad_tokens = tuple(framing.to_tokens(grad) for grad in grads)
        _, backward_accumulate = _cross_region_kernels(query)
        backward_accumulate(
            grad_out, query, key, value, framing.to_tokens(own_out), framing.to_tokens(own_lse),
            grad_tokens, ctx.plan, ctx.scale,
        )
        results = [rearrange(grad, "b h t n d -> b h (t n) d") for grad in grad_tokens]
        return (*results, None, None)


def _checked_inputs(query, key, value, layout: SparseLayout):
    """The inputs in the one stride pattern the kernels read, after checking them against the layout."""
    if query.shape[2] != layout.num_tokens:
        raise ValueError(
            f"query has {query.shape[2]} tokens but the layout describes {layout.num_tokens} "
            f"({layout.num_frames} frames x {layout.tokens_per_frame}); build the layout for this clip's grid"
        )
    if not (query.shape == key.shape == value.shape):
        raise ValueError(f"query, key and value must share one shape, got {query.shape}, {key.shape}, {value.shape}")
    if not (query.stride() == key.stride() == value.stride()) or query.stride(-1) != 1:
        # The kernels read query, key and value with one stride pattern and contiguous rows.
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    return query, key, value


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
    query, key, value = _checked_inputs(query, key, value, layout)
    plan = prepare_fast_layout(layout, query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    return _FastSparseAttention.apply(query, key, value, plan, scale)


@torch.no_grad()
def forward_parts(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: SparseLayout, scale: float | None = None
) -> dict[str, Callable[[], torch.Tensor]]:
    """The forward's two parts as separate calls, to profile where its time goes (inputs as
    fast_sparse_attention): "own_frame" runs the dense per-frame kernel and returns its output as a
    batch of frames; "cross_region" runs the cross-region kernel with its merge into a scratch copy of part
    A's result and returns that buffer as (batch, heads, T * N, d): the full output after the first call,
    merged once more by every further call (the same work, for timing)."""
    query, key, value = _checked_inputs(query, key, value, layout)
    plan = prepare_fast_layout(layout, query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    framing = FrameBatching.choose(query, plan.num_frames)
    frames = [framing.to_frames(x) for x in (query, key, value)]
    own_out, own_lse, _ = _own_frame_forward(*frames, scale)
    out_tokens, lse_tokens = framing.to_tokens(own_out), framing.to_tokens(own_lse)
    forward_merge, _ = _cross_region_kernels(query)

    @torch.no_grad()
    def own_frame() -> torch.Tensor:
        return _own_frame_forward(*frames, scale)[0]

    @torch.no_grad()
    def cross_region() -> torch.Tensor:
        forward_merge(query, key, value, out_tokens, lse_tokens, plan, scale)
        return rearrange(out_tokens, "b h t n d -> b h (t n) d")

    return {"own_frame": own_frame, "cross_region": cross_region}
