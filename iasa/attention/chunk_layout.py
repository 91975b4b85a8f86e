"""The sparse layout of one streamed chunk: queries are the chunk's tokens, keys the cached tokens of earlier
frames followed by the chunk's own.

The rule is the full clip's (iasa.attention.masks, stated once there), evaluated on the frames the keys come
from. Key frames are numbered 0..Tk-1 in key order (the cached frames, then the chunk's C frames, which are
the last C), `frame_selection` (Tk, Tk) says which key frames each frame selects, and every token's class is
key_frame * R + region, so one class table (masks.class_table) serves queries and keys. The cache may hold
only some tokens of a frame (region tokens: background never crosses frames), so keys are listed token by
token. A full clip is the case where every frame is the chunk's and every token a key.
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
    int64 key frame and region id of every key token, in key order. grid_size (h, w), block_size and
    region_names as in SparseLayout."""

    frame_selection: torch.Tensor
    query_regions: torch.Tensor
    key_frames: torch.Tensor
    key_regions: torch.Tensor
    grid_size: tuple[int, int]
    block_size: int = LayoutRuleConfig.block_size
    region_names: tuple[str, ...] = ()
    key_capacity: tuple[int, int] | None = None

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
        if self.key_capacity is not None and (self.key_capacity[0] < frames or self.key_capacity[1] < self.num_keys):
            raise ValueError(f"key_capacity {self.key_capacity} is below the chunk's {frames} frames, {self.num_keys} keys")

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

    def to(self, device: torch.device | str) -> "ChunkLayout":
        return replace(
            self,
            frame_selection=self.frame_selection.to(device),
            query_regions=self.query_regions.to(device),
            key_frames=self.key_frames.to(device),
            key_regions=self.key_regions.to(device),
        )


def num_chunk_region_ids(layout: ChunkLayout) -> int:
    """R, as masks.num_region_ids: at least one id per configured region name, background included."""
    largest = max(
        int(layout.query_regions.max()) if layout.num_queries else 0,
        int(layout.key_regions.max()) if layout.num_keys else 0,
    )
    return max(largest, len(layout.region_names)) + 1


def chunk_token_classes(layout: ChunkLayout) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Classes of the query tokens (Sq,) in (f h w) order and of the key tokens (Sk,) in key order, int64 on
    the CPU, and R."""
    regions = num_chunk_region_ids(layout)
    chunk, tokens = layout.query_regions.shape
    query_frame = repeat(torch.arange(layout.num_frames - chunk, layout.num_frames), "c -> (c n)", n=tokens)
    query_class = query_frame * regions + rearrange(layout.query_regions.long().cpu(), "c n -> (c n)")
    key_class = layout.key_frames.long().cpu() * regions + layout.key_regions.long().cpu()
    return query_class, key_class, regions


def chunk_class_mask(query_class: torch.Tensor, key_class: torch.Tensor, table: torch.Tensor):
    """The rule as a mask_mod over separate query and key class lists (masks.class_mask for one list)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return table[query_class[q_idx], key_class[kv_idx]]

    return mask_mod


def chunk_dense_mask(layout: ChunkLayout, device: torch.device | str | None = None) -> torch.Tensor:
    """(Sq, Sk) bool (True = may attend), queries in (f h w) order, keys in key order."""
    device = layout.query_regions.device if device is None else device
    query_class, key_class, regions = chunk_token_classes(layout)
    table = class_table(layout.frame_selection, regions).to(device)
    return table[query_class.to(device)[:, None], key_class.to(device)[None, :]]
