"""The IASA rule, stated once, and the masks derived from it. FlexAttention style: mask_mod(b, h, q, kv).

    allowed(q, k) = same_frame(q, k) or (selected_frame(q, k) and same_region(q, k))

The rule sees a token only through its class c = frame * R + region (R region ids, background
included). class_table evaluates it once for every pair of the C = T * R classes, and every kernel
reads that (C, C) table: the mask_mod and the dense reference mask through per-token class ids, the
block layout's tile counts (block_layout) and the fast path's own-frame / cross-frame split and key
lists (fast_plan). A new rule is a change to ``allowed`` alone. The mask_mod reads tensors, never
Python constants, whose shapes depend only on (T, R, S), so one compiled kernel serves every clip of
the same shape and region list.
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange, repeat

from iasa.attention.layout import BACKGROUND, SparseLayout

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def same_frame(frame_q: torch.Tensor, frame_k: torch.Tensor) -> torch.Tensor:
    """Dense attention within a latent frame."""
    return frame_q == frame_k


def selected_frame(frame_q: torch.Tensor, frame_k: torch.Tensor, frame_selection: torch.Tensor) -> torch.Tensor:
    """Global mask: the key's frame is among those chosen for the query's frame. frame_selection (T, T)."""
    return frame_selection[frame_q, frame_k]


def same_region(region_q: torch.Tensor, region_k: torch.Tensor) -> torch.Tensor:
    """Local mask: both tokens lie in the same body region (background matches nothing)."""
    return (region_q == region_k) & (region_q != BACKGROUND)


def allowed(
    frame_q: torch.Tensor, region_q: torch.Tensor, frame_k: torch.Tensor, region_k: torch.Tensor,
    frame_selection: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The rule, on broadcastable frame and region ids of queries and keys."""
    return same_frame(frame_q, frame_k) | (
        selected_frame(frame_q, frame_k, frame_selection) & same_region(region_q, region_k)
    )


def num_region_ids(layout: SparseLayout) -> int:
    """R: region ids run over 0..R-1 (background included), at least one per configured region name, so
    that R, and with it the class table's shape, is the same for every clip of one region list."""
    return max(int(layout.token_regions.max()) if layout.num_tokens else 0, len(layout.region_names)) + 1


def class_table(frame_selection: torch.Tensor, regions: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(C, C) bool on `device` (the CPU unless asked), C = T * R: [cq, ck] whether a token of class cq may attend
    to one of class ck. frame_selection (T, T) bool; regions: R."""
    frames = frame_selection.shape[0]
    frame = repeat(torch.arange(frames, device=device), "t -> (t r)", r=regions)
    region = repeat(torch.arange(regions, device=device), "r -> (t r)", t=frames)
    return allowed(frame[:, None], region[:, None], frame[None, :], region[None, :], frame_selection.to(device))


def token_classes(layout: SparseLayout) -> tuple[torch.Tensor, int]:
    """The class of every token in Wan's (f h w) order, (S,) int64 on the CPU, and R. Class planning is
    small integer work, done on the CPU whatever the layout's device."""
    regions = num_region_ids(layout)
    frames, tokens = layout.token_regions.shape
    token_frame = repeat(torch.arange(frames), "t -> (t n)", n=tokens)
    return token_frame * regions + rearrange(layout.token_regions.long().cpu(), "t n -> (t n)"), regions


def class_mask(token_class: torch.Tensor, table: torch.Tensor) -> MaskMod:
    """The rule as a mask_mod: token_class (S,) int64 in the caller's token order, table (C, C) bool."""

    def mask_mod(b, h, q_idx, kv_idx):
        return table[token_class[q_idx], token_class[kv_idx]]

    return mask_mod


def dense_mask(layout: SparseLayout, device: torch.device | str | None = None) -> torch.Tensor:
    """The (S, S) bool mask (True = may attend) in token order. S^2 bytes: small clips only."""
    device = layout.token_regions.device if device is None else device
    token_class, regions = token_classes(layout)
    table = class_table(layout.frame_selection, regions)
    mask_mod = class_mask(token_class.to(device), table.to(device))
    index = torch.arange(layout.num_tokens, device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    return mask_mod(zero, zero, index[:, None], index[None, :])
