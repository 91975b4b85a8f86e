"""Route every DiT block's self-attention through the project's attention: dense SDPA or IASA sparse.

`patch_self_attention(dit, backend)` makes each block's whole self-attention the project's: the block's own
q/k/v/o linears, then RMSNorm + RoPE in one float32 pass (`norm_rope`), then `RoutedAttention` (dense SDPA or
the sparse kernel), which replaces `block.self_attn.attn`. diffsynth's SelfAttention does the same math with
RoPE in complex128 (a float64 copy of q and k in every layer) and an unfused float32 RMSNorm; here the RoPE
cos/sin tables are derived once per DiT forward (the `freqs` tensor all layers share) and the norm and
rotation run as one kernel on CUDA (torch.compile, inference only). Results differ by bf16 rounding only.

All blocks share one `AttentionRoute`; `set_attention_layout(dit, layout)` sets the clip's sparse layout once
before sampling, and every layer and step reuses it (None = dense). Only self-attention is touched: the
cross-attention stays diffsynth's.

The patch swaps the class of each `block.self_attn` for a subclass with another forward and adds no
parameters: state-dict keys, peft LoRA injection (which wraps the q/k/v/o linears, before or after patching)
and gradient checkpointing (which re-runs the block, reading the same route) all work unchanged. Tokens
arrive in Wan's (f h w) order, the order SparseLayout uses.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from diffsynth.models.wan_video_dit import SelfAttention
from torch.nn.attention import SDPBackend, sdpa_kernel

from iasa.attention import sparse_attention
from iasa.attention.layout import SparseLayout
from iasa.video.fast_compile import CompiledWithFallback

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
class RopeTable:
    """cos and sin (tokens, 1, head_dim / 2) float32 of one `freqs` tensor (kept only as a weak reference)."""

    source: weakref.ref
    cos: torch.Tensor
    sin: torch.Tensor


@dataclass
class AttentionRoute:
    """Shared by all patched blocks: the clip's layout (None = dense), the sparse kernel backend and the
    RoPE table of the current forward."""

    backend: str
    layout: SparseLayout | None = None
    rope: RopeTable | None = field(default=None, repr=False)

    def rope_table(self, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of diffsynth's complex RoPE frequencies (tokens, 1, head_dim / 2), built once per
        `freqs` tensor (one per DiT forward, shared by all layers and by checkpointed re-runs)."""
        if self.rope is None or self.rope.source() is not freqs:
            # freqs are unit complex numbers exp(i * angle) in complex128: real = cos, imag = sin.
            table = torch.view_as_real(freqs).float()
            self.rope = RopeTable(weakref.ref(freqs), table[..., 0].contiguous(), table[..., 1].contiguous())
        return self.rope.cos, self.rope.sin


def norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """RMSNorm over the channels then RoPE per head, in float32, rounded once to x's dtype.

    x (b, s, heads * head_dim); weight (heads * head_dim,); cos, sin (s, 1, head_dim / 2), broadcast over
    heads. Channel pairs (2i, 2i + 1) of each head are the (real, imag) parts rotated by angle i, the pairing
    of diffsynth's view_as_complex. Returns (b, s, heads * head_dim).
    """
    normed = F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps)
    pairs = rearrange(normed, "b s (n d two) -> b s n d two", n=num_heads, two=2)
    real, imag = pairs.unbind(-1)
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rearrange(rotated, "b s n d two -> b s (n d two)").to(x.dtype)


# One fused kernel on CUDA (read x once, write once) instead of ~10 passes; compiled lazily.
compiled_norm_rope = CompiledWithFallback(norm_rope)


def fused_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """`norm_rope`, compiled into one kernel for CUDA inference; eager under autograd and on the CPU
    (training keeps the plain graph, which peft and checkpointing are tested with)."""
    if x.is_cuda and not torch.is_grad_enabled():
        return compiled_norm_rope(x, weight, eps, cos, sin, num_heads)
    return norm_rope(x, weight, eps, cos, sin, num_heads)


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


class RoutedSelfAttention(SelfAttention):
    """diffsynth's SelfAttention with the project's forward (same submodules, same parameters)."""

    attn: RoutedAttention

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        """x (b, s, dim), freqs (s, 1, head_dim / 2) complex -> (b, s, dim)."""
        cos, sin = self.attn.route.rope_table(freqs)
        q = fused_norm_rope(self.q(x), self.norm_q.weight, self.norm_q.eps, cos, sin, self.num_heads)
        k = fused_norm_rope(self.k(x), self.norm_k.weight, self.norm_k.eps, cos, sin, self.num_heads)
        return self.o(self.attn(q, k, self.v(x)))


def patch_self_attention(dit: nn.Module, backend: str = "reference") -> AttentionRoute:
    """Make every DiT block's self-attention the project's (idempotent); returns the shared route."""
    route = getattr(dit, "attention_route", None)
    if route is None:
        route = AttentionRoute(backend=backend)
        # Stored outside the module tree: the route is state, not a submodule or a parameter.
        object.__setattr__(dit, "attention_route", route)
    route.backend = backend
    for block in dit.blocks:
        block.self_attn.attn = RoutedAttention(block.self_attn.num_heads, route)
        # A class swap, not a new module: the linears (peft-wrapped or not) and norms stay where they are.
        block.self_attn.__class__ = RoutedSelfAttention
    return route


def set_attention_layout(dit: nn.Module, layout: SparseLayout | None) -> None:
    """Use `layout` in every layer until changed (None = dense). The DiT must be patched first."""
    route = getattr(dit, "attention_route", None)
    if route is None:
        raise RuntimeError("the DiT's self-attention is not patched: call patch_self_attention(dit) first")
    route.layout = layout
