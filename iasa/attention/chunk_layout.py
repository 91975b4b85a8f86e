"""The sparse layout of one streamed chunk: queries are the chunk's tokens, keys the tokens of a stream cache's
buffer (iasa.video.stream_cache): the chunk's own and those of the cached frames, in buffer order.

The rule is the full clip's (iasa.attention.masks, stated once there), evaluated on the frames the keys come
from. Key frames are numbered 0..Tk-1 (the cache's slots, then the chunk's C frames, which are the last C),
`frame_selection` (Tk, Tk) says which key frames each frame selects, and every token's class is
key_frame * R + region, so one class table (masks.class_table) serves queries and keys. Keys are listed token by
token, in any order: the cache holds only some tokens of a frame (region tokens: background never crosses
frames), and unused positions of the buffer are padding, key frame Tk, a frame that nothing selects and no query
is in, so padding is attended by nothing. A full clip is the case where every frame is the chunk's and every
token a key.

Everything here is tensor work on the layout's device (no host synchronisation): the flex kernel's plan
(iasa.attention.flex) is built from it once per chunk, on the device the cache lives on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from einops import rearrange, repeat

from iasa.attention.config import LayoutRuleConfig
from iasa.attention.masks import class_table


@dataclass(frozen=True, eq=False)
class ChunkLayout:
    """frame_selection: (Tk, Tk) bool over key frames, diagonal True; query_regions: (C, N) int64 region id of
    every token of the chunk's C frames (key frames Tk - C..Tk - 1), N = h * w; key_frames, key_regions: (Sk,)
    int64 key frame (Tk: padding) and region id of every key token, in key order; region_ids: R, region ids run
    over 0..R-1 (background included; masks.num_region_ids). grid_size (h, w), block_size and region_names as
    in SparseLayout."""

    frame_selection: torch.Tensor
    query_regions: torch.Tensor
    key_frames: torch.Tensor
    key_regions: torch.Tensor
    grid_size: tuple[int, int]
    region_ids: int
    block_size: int = LayoutRuleConfig.block_size
    region_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        frames = self.frame_selection.shape[0]
        chunk, tokens = self.query_regions.shape
        if self.frame_selection.shape != (frames, frames) or chunk > frames:
            raise ValueError(
                f"frame_selection {tuple(self.frame_selection.shape)} must be square over the key frames, which "
                f"end with the chunk's {chunk} frames"
            )
        if self.key_frames.shape != self.key_regions.shape or self.key_frames.dim() != 1:
            raise ValueError(f"key_frames {tuple(self.key_frames.shape)} and key_regions {tuple(self.key_regions.shape)} must be one (Sk,) list each")
        if self.grid_size[0] * self.grid_size[1] != tokens:
            raise ValueError(f"grid {self.grid_size} does not hold {tokens} tokens per frame")
        if self.region_ids <= len(self.region_names):
            raise ValueError(f"region_ids {self.region_ids} must exceed the {len(self.region_names)} region names (background is id 0)")

    @property
    def num_frames(self) -> int:
        """Tk: key frames."""
        return self.frame_selection.shape[0]

    @property
    def chunk_frames(self) -> int:
        return self.query_regions.shape[0]

    @property
    def num_queries(self) -> int:
        return self.query_regions.numel()

    @property
    def num_keys(self) -> int:
        return self.key_frames.numel()

    @property
    def device(self) -> torch.device:
        return self.frame_selection.device

    def to(self, device: torch.device | str) -> "ChunkLayout":
        return replace(
            self,
            frame_selection=self.frame_selection.to(device, non_blocking=True),
            query_regions=self.query_regions.to(device, non_blocking=True),
            key_frames=self.key_frames.to(device, non_blocking=True),
            key_regions=self.key_regions.to(device, non_blocking=True),
        )


def chunk_token_classes(layout: ChunkLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes of the query tokens (Sq,) in (f h w) order and of the key tokens (Sk,) in key order, int64 on
    the layout's device; padding keys are class Tk * R (background of the padding frame)."""
    regions = layout.region_ids
    chunk, tokens = layout.query_regions.shape
    frames = torch.arange(layout.num_frames - chunk, layout.num_frames, device=layout.device)
    query_class = repeat(frames, "c -> (c n)", n=tokens) * regions + rearrange(layout.query_regions.long(), "c n -> (c n)")
    padding = layout.key_frames == layout.num_frames
    key_class = torch.where(padding, layout.num_frames * regions, layout.key_frames.long() * regions + layout.key_regions.long())
    return query_class, key_class


def chunk_class_table(layout: ChunkLayout) -> torch.Tensor:
    """((Tk + 1) R, (Tk + 1) R) bool on the layout's device: the rule's class table over the key frames and the
    padding frame Tk, which no frame selects."""
    frames = layout.num_frames
    selection = torch.zeros(frames + 1, frames + 1, dtype=torch.bool, device=layout.device)
    selection[:frames, :frames] = layout.frame_selection
    return class_table(selection, layout.region_ids, device=layout.device)


def chunk_class_mask(query_class: torch.Tensor, key_class: torch.Tensor, table: torch.Tensor):
    """The rule as a mask_mod over separate query and key class lists (masks.class_mask for one list)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return table[query_class[q_idx], key_class[kv_idx]]

    return mask_mod


def chunk_dense_mask(layout: ChunkLayout, device: torch.device | str | None = None) -> torch.Tensor:
    """(Sq, Sk) bool (True = may attend), queries in (f h w) order, keys in key order."""
    query_class, key_class = chunk_token_classes(layout)
    mask = chunk_class_table(layout)[query_class[:, None], key_class[None, :]]
    return mask if device is None else mask.to(device)
