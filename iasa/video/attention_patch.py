"""Route every DiT block's self-attention through the project's attention: dense SDPA or IASA sparse.

`patch_self_attention(dit, backend)` replaces each `block.self_attn.attn` (the bare attention op that
diffsynth's SelfAttention calls after q/k/v projections, RMSNorm and RoPE) with `RoutedAttention`. All
blocks share one `AttentionRoute`; `set_attention_layout(dit, layout)` sets the clip's sparse layout once
before sampling, and every layer and step reuses it (None = dense). Only self-attention is touched: the
cross-attention's own `attn` stays diffsynth's.

The op owns no parameters, so peft LoRA injection (which wraps the q/k/v/o linears around it) and gradient
checkpointing (which re-runs the block, reading the same route) both work unchanged. Tokens arrive in Wan's
(f h w) order, the order SparseLayout uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from iasa.attention import sparse_attention
from iasa.attention.layout import SparseLayout

# Fastest first on H100/H200 (cuDNN is 1.3-1.4x flash there); SDPA falls through the list when a kernel
# cannot take the inputs (e.g. float32).
CUDA_SDPA_PRIORITY = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
ATTENTION_MODES = ("dense", "iasa")


def dense_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Full attention, (b, heads, tokens, head_dim) in and out, with the fastest SDPA kernel available."""
    if query.is_cuda:
        with sdpa_kernel(CUDA_SDPA_PRIORITY, set_priority=True):
            return F.scaled_dot_product_attention(query, key, value)
    return F.scaled_dot_product_attention(query, key, value)


@dataclass
class AttentionRoute:
    """Shared by all patched blocks: the clip's layout (None = dense) and the sparse kernel backend."""

    backend: str
    layout: SparseLayout | None = None


class RoutedAttention(nn.Module):
    """Drop-in for diffsynth's AttentionModule: q, k, v (b, s, heads * head_dim) -> (b, s, heads * head_dim)."""

    def __init__(self, num_heads: int, route: AttentionRoute) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.route = route

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(t, "b s (n d) -> b n s d", n=self.num_heads) for t in (q, k, v))
        layout = self.route.layout
        if layout is None:
            out = dense_attention(q, k, v)
        else:
            if layout.num_tokens != q.shape[2]:
                raise ValueError(
                    f"sparse layout covers {layout.num_tokens} tokens ({layout.num_frames} frames x "
                    f"{layout.grid_size}), the DiT sees {q.shape[2]}: build the layout for this clip's latent grid"
                )
            out = sparse_attention(q, k, v, layout, self.route.backend)
        return rearrange(out, "b n s d -> b s (n d)")


def patch_self_attention(dit: nn.Module, backend: str = "reference") -> AttentionRoute:
    """Replace the self-attention op of every DiT block (idempotent); returns the shared route."""
    route = getattr(dit, "attention_route", None)
    if route is None:
        route = AttentionRoute(backend=backend)
        # Stored outside the module tree: the route is state, not a submodule or a parameter.
        object.__setattr__(dit, "attention_route", route)
    route.backend = backend
    for block in dit.blocks:
        block.self_attn.attn = RoutedAttention(block.self_attn.num_heads, route)
    return route


def set_attention_layout(dit: nn.Module, layout: SparseLayout | None) -> None:
    """Use `layout` in every layer until changed (None = dense). The DiT must be patched first."""
    route = getattr(dit, "attention_route", None)
    if route is None:
        raise RuntimeError("the DiT's self-attention is not patched: call patch_self_attention(dit) first")
    route.layout = layout
