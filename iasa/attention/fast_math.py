"""Plain-PyTorch kernels of the fast path's two parts (CPU, float32/float64, and checks on GPU).

Each part returns its output together with the log-sum-exp of its scores, so the parts can be merged;
each backward takes the MERGED output and log-sum-exp, which makes the per-part gradients add up to the
gradient of the whole softmax (P = exp(S - lse_merged); dS = P * (dP - rowsum(dO * O_merged))).
Computation runs in float32 at least and the output comes back in the input's dtype.
"""

from __future__ import annotations

import torch

from iasa.attention.fast_plan import CrossRegionPlan


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def masked_attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """query (..., Lq, d), key and value (..., Lk, d), allowed (Lq, Lk) bool or None for dense.

    Returns the output (..., Lq, d) in the input dtype (zeros on rows with no allowed key) and the
    log-sum-exp (..., Lq) in float32/float64 (-inf on such rows).
    """
    dtype = _compute_dtype(query)
    scores = torch.matmul(query.to(dtype), key.to(dtype).transpose(-1, -2)) * scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probabilities = torch.exp(scores - lse.unsqueeze(-1)).nan_to_num(0.0)
    out = torch.matmul(probabilities, value.to(dtype))
    return out.to(query.dtype), lse


def masked_attention_backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    allowed: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of one part given the merged output `out` (..., Lq, d) and merged `lse` (..., Lq)."""
    dtype = _compute_dtype(query)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    d_out = grad_out.to(dtype)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    probabilities = torch.exp(scores - lse.to(dtype).unsqueeze(-1))
    if allowed is not None:
        probabilities = probabilities.masked_fill(~allowed, 0.0)
    d_probabilities = torch.matmul(d_out, v.transpose(-1, -2))
    row_dot = (d_out * out.to(dtype)).sum(-1, keepdim=True)
    d_scores = probabilities * (d_probabilities - row_dot) * scale
    d_query = torch.matmul(d_scores, k)
    d_key = torch.matmul(d_scores.transpose(-1, -2), q)
    d_value = torch.matmul(probabilities.transpose(-1, -2), d_out)
    return d_query.to(query.dtype), d_key.to(key.dtype), d_value.to(value.dtype)


def cross_region_allowed(plan: CrossRegionPlan) -> torch.Tensor:
    """(M, M) bool: which compact rows meet across frames, read from the rule's cross-frame class table."""
    return plan.cross_table[plan.token_class[:, None], plan.token_class[None, :]]


def _compact(x: torch.Tensor, plan: CrossRegionPlan) -> torch.Tensor:
    """(batch, heads, T * N, d) -> (batch, heads, M, d): the region tokens in the plan's order."""
    return x.index_select(2, plan.token_frame * plan.tokens_per_frame + plan.token_position)


def cross_region_forward_merge(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out_tokens: torch.Tensor,
    lse_tokens: torch.Tensor,
    plan: CrossRegionPlan,
    scale: float,
) -> None:
    """Same contract as fast_triton.cross_region_forward_merge: merge the cross-region part in place
    into out_tokens (batch, heads, T, N, d) and lse_tokens (batch, heads, T, N)."""
    frame, position = plan.token_frame, plan.token_position
    cross_out, cross_lse = masked_attention_with_lse(
        _compact(query, plan), _compact(key, plan), _compact(value, plan), cross_region_allowed(plan), scale
    )
    own_out, own_lse = out_tokens[:, :, frame, position], lse_tokens[:, :, frame, position]
    lse = torch.logaddexp(own_lse, cross_lse)
    out = (
        torch.exp(own_lse - lse).unsqueeze(-1) * own_out.to(lse.dtype)
        + torch.exp(cross_lse - lse).unsqueeze(-1) * cross_out.to(lse.dtype)
    )
    out_tokens[:, :, frame, position] = out.to(out_tokens.dtype)
    lse_tokens[:, :, frame, position] = lse.to(lse_tokens.dtype)


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
    """Same contract as fast_triton.cross_region_backward_accumulate: add the cross-region part's
    gradients (from the MERGED output and lse) into the (batch, heads, T, N, d) gradient views."""
    frame, position = plan.token_frame, plan.token_position
    cross_grads = masked_attention_backward(
        _compact(grad_out, plan),
        _compact(query, plan), _compact(key, plan), _compact(value, plan),
        out_tokens[:, :, frame, position], lse_tokens[:, :, frame, position],
        cross_region_allowed(plan), scale,
    )
    for grad, cross_grad in zip(grad_tokens, cross_grads):
        grad[:, :, frame, position] += cross_grad
