"""Reference kernel: PyTorch SDPA with the dense (S, S) mask. Any device, differentiable, S^2 memory."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from iasa.attention.chunk_layout import ChunkLayout, chunk_dense_mask
from iasa.attention.layout import SparseLayout
from iasa.attention.masks import dense_mask

# One dense mask per layout and device, dropped with the layout.
_DENSE_MASKS: "weakref.WeakKeyDictionary[SparseLayout | ChunkLayout, dict[torch.device, torch.Tensor]]" = (
    weakref.WeakKeyDictionary()
)


def cached_dense_mask(layout: SparseLayout | ChunkLayout, device: torch.device) -> torch.Tensor:
    per_device = _DENSE_MASKS.setdefault(layout, {})
    if device not in per_device:
        per_device[device] = (
            chunk_dense_mask(layout, device) if isinstance(layout, ChunkLayout) else dense_mask(layout, device)
        )
    return per_device[device]


def reference_sparse_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: SparseLayout | ChunkLayout
) -> torch.Tensor:
    """query (B, H, Sq, D), key, value (B, H, Sk, D) -> (B, H, Sq, D); Sq = Sk = S for a full clip."""
    mask = cached_dense_mask(layout, query.device)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
