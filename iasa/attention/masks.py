"""The IASA rule as small mask functions, FlexAttention style: mask_mod(b, h, q_idx, kv_idx) -> bool.

    allowed(q, k) = same_frame(q, k) or (selected_frame(q, k) and same_region(q, k))

Each mask function reads small per-token tensors (frame and region of every token, in whatever token
order the caller uses) and the (T, T) frame selection, never Python constants, so one compiled kernel
serves every clip of the same shape. The same functions, evaluated on broadcast index grids, give the
dense (S, S) reference mask.
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange, repeat
from torch.nn.attention.flex_attention import and_masks, or_masks

from iasa.attention.layout import BACKGROUND, SparseLayout

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def same_frame(token_frame: torch.Tensor) -> MaskMod:
    """Dense attention within a latent frame. token_frame (S,) int."""

    def mask_mod(b, h, q_idx, kv_idx):
        return token_frame[q_idx] == token_frame[kv_idx]

    return mask_mod


def selected_frame(token_frame: torch.Tensor, frame_selection: torch.Tensor) -> MaskMod:
    """Global mask: the key's frame is among those chosen for the query's frame. frame_selection (T, T)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return frame_selection[token_frame[q_idx], token_frame[kv_idx]]

    return mask_mod


def same_region(token_region: torch.Tensor) -> MaskMod:
    """Local mask: both tokens lie in the same body region (background matches nothing)."""

    def mask_mod(b, h, q_idx, kv_idx):
        region = token_region[q_idx]
        return (region == token_region[kv_idx]) & (region != BACKGROUND)

    return mask_mod


def input_aware_mask(token_frame: torch.Tensor, token_region: torch.Tensor, frame_selection: torch.Tensor) -> MaskMod:
    return or_masks(
        same_frame(token_frame),
        and_masks(selected_frame(token_frame, frame_selection), same_region(token_region)),
    )


def token_frames_and_regions(layout: SparseLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame and region of every token in Wan's (f h w) order: two (S,) int64 tensors."""
    frames, tokens = layout.token_regions.shape
    token_frame = repeat(torch.arange(frames, device=layout.token_regions.device), "t -> (t n)", n=tokens)
    return token_frame, rearrange(layout.token_regions.long(), "t n -> (t n)")


def dense_mask(layout: SparseLayout, device: torch.device | str | None = None) -> torch.Tensor:
    """The (S, S) bool mask (True = may attend) in token order. S^2 bytes: small clips only."""
    token_frame, token_region = token_frames_and_regions(layout)
    device = token_frame.device if device is None else device
    mask_mod = input_aware_mask(token_frame.to(device), token_region.to(device), layout.frame_selection.to(device))
    index = torch.arange(layout.num_tokens, device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    return mask_mod(zero, zero, index[:, None], index[None, :])
