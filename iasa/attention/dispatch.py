"""One entry point for input-aware sparse attention, whatever the kernel."""

from __future__ import annotations

import torch

from iasa.attention.chunk_layout import ChunkLayout
from iasa.attention.flex import cached_flex_chunk_plan, cached_flex_plan, flex_chunk_attention, flex_sparse_attention
from iasa.attention.layout import SparseLayout
from iasa.attention.reference import reference_sparse_attention

BACKENDS = ("reference", "flex", "fast")


def sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SparseLayout | ChunkLayout,
    backend: str = "reference",
) -> torch.Tensor:
    """Attention of query (B, H, S, D) over key, value (B, H, S, D) where layout allows: (B, H, S, D).

    Tokens are in Wan's (f h w) order, S = layout.num_tokens. backend: "reference" (SDPA with the
    dense mask; any device, differentiable), "flex" (FlexAttention; compiled on CUDA, forward only
    elsewhere), "fast" (iasa.attention.fast, imported only when asked for). A ChunkLayout (streaming)
    goes to chunk_sparse_attention.
    """
    if query.dim() != 4 or key.shape != value.shape or key.shape[:2] != query.shape[:2]:
        raise ValueError(
            f"expected query, key, value as (batch, heads, tokens, head_dim) with matching batch and heads, "
            f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if isinstance(layout, ChunkLayout):
        return chunk_sparse_attention(query, key, value, layout, backend)
    if query.shape[-2] != layout.num_tokens or key.shape[-2] != layout.num_tokens:
        raise ValueError(
            f"the layout covers {layout.num_tokens} tokens ({layout.num_frames} frames x {layout.grid_size}), "
            f"got {query.shape[-2]} queries and {key.shape[-2]} keys"
        )
    if backend == "reference":
        return reference_sparse_attention(query, key, value, layout)
    if backend == "flex":
        return flex_sparse_attention(query, key, value, layout)
    if backend == "fast":
        from iasa.attention.fast import fast_sparse_attention

        return fast_sparse_attention(query, key, value, layout)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")


def chunk_sparse_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: ChunkLayout, backend: str = "reference"
) -> torch.Tensor:
    """A streamed chunk's attention: query (B, H, Sq, D) of the chunk's tokens over key, value (B, H, Sk, D) of
    the cached tokens then the chunk's, where the layout allows: (B, H, Sq, D). backend "reference" or "flex"
    (the "fast" kernels plan square full-clip layouts only)."""
    if query.shape[-2] != layout.num_queries or key.shape[-2] != layout.num_keys:
        raise ValueError(
            f"the chunk layout has {layout.num_queries} queries and {layout.num_keys} keys, got "
            f"{query.shape[-2]} and {key.shape[-2]}"
        )
    if backend == "reference":
        return reference_sparse_attention(query, key, value, layout)
    if backend == "flex":
        return flex_chunk_attention(query, key, value, layout)
    if backend == "fast":
        raise ValueError("attention backend 'fast' runs full clips only; stream with attention.backend=flex")
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")


def prepare_sparse_attention(layout: SparseLayout | ChunkLayout, backend: str, device: torch.device) -> None:
    """Build the kernel's plan of `layout` on `device` now (it is cached with the layout for every layer). The
    compiled DiT blocks' attention op (iasa.video.compiled_blocks) needs flex's built before it runs: building a
    BlockMask runs vmap, which fails inside a custom op ("Cannot access storage of BatchedTensorImpl")."""
    if backend == "flex":
        (cached_flex_chunk_plan if isinstance(layout, ChunkLayout) else cached_flex_plan)(layout, device)
