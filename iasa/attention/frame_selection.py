"""Global mask: which latent frames each query frame may look at across frames.

For every query frame: its own frame, the ``top_k`` candidate frames of smallest pose distance
(candidates: earlier frames under ``past``, every other frame under ``both``), and frame 0 when
``keep_first_frame`` (the reference image's frame, an attention sink for identity; it is then added on
top of the K and is not itself a candidate). Fewer than K candidates: all of them. Ties go to the
earlier frame, so the selection is deterministic.
"""

from __future__ import annotations

import torch

DIRECTIONS = ("past", "both")


def candidate_frames(num_frames: int, direction: str, keep_first_frame: bool) -> torch.Tensor:
    """(T, T) bool: [tq, tk] when tk may be chosen for tq by pose similarity."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    query = torch.arange(num_frames)[:, None]
    key = torch.arange(num_frames)[None, :]
    candidates = key < query if direction == "past" else key != query
    if keep_first_frame:
        candidates = candidates & (key != 0)
    return candidates


def select_frames(
    distance: torch.Tensor, top_k: int, direction: str, keep_first_frame: bool
) -> torch.Tensor:
    """distance (T, T) (+inf allowed: ranked last) -> frame_selection (T, T) bool, diagonal True."""
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    num_frames = distance.shape[0]
    candidates = candidate_frames(num_frames, direction, keep_first_frame)
    # Non-candidates sort after every candidate, incomparable candidates (+inf) after comparable ones;
    # a stable sort keeps index order among equals, which is the earlier-frame tie break.
    largest = torch.finfo(torch.float64).max
    sort_key = torch.where(candidates, distance.double().nan_to_num(posinf=largest), torch.inf)
    order = torch.sort(sort_key, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(num_frames).expand(num_frames, -1).contiguous())
    selection = candidates & (rank < top_k)
    selection |= torch.eye(num_frames, dtype=torch.bool)
    if keep_first_frame:
        selection[:, 0] = True
    return selection
