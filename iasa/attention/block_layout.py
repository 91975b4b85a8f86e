"""The layout at the granularity of block-sparse kernels, with tokens reordered so that blocks are full.

Tokens are sorted by (frame, region) (a stable sort, so each frame stays contiguous and tokens of one
region sit together); a tile of block_size x block_size (query, key) tokens is then mostly all allowed
or all disallowed. Pair counts per tile come from per-block histograms over (frame, region) classes:
    count[qb, kb] = sum over classes cq, ck of n[qb, cq] * table[cq, ck] * n[kb, ck]
(masks.class_table), exact and without the dense (S, S) mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from iasa.attention.layout import SparseLayout
from iasa.attention.masks import class_table, token_classes


def frame_region_order(layout: SparseLayout) -> torch.Tensor:
    """Permutation (S,) int64 on the CPU: position i of the reordered sequence holds token perm[i]."""
    classes, _ = token_classes(layout)
    return torch.sort(classes, stable=True).indices


def inverse_permutation(permutation: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(permutation.numel(), device=permutation.device)
    return inverse


@dataclass(frozen=True)
class BlockLayout:
    """pair_counts (Bq, Bk) int64: allowed (query, key) token pairs in each tile; block_sizes (B,) int64:
    tokens in each block (the last may be short). Tiles are full, partial or empty."""

    block_size: int
    pair_counts: torch.Tensor
    block_sizes: torch.Tensor

    @property
    def tile_sizes(self) -> torch.Tensor:
        return self.block_sizes[:, None] * self.block_sizes[None, :]

    @property
    def full(self) -> torch.Tensor:
        return self.pair_counts == self.tile_sizes

    @property
    def partial(self) -> torch.Tensor:
        return (self.pair_counts > 0) & ~self.full

    @property
    def nonempty(self) -> torch.Tensor:
        return self.pair_counts > 0


def block_layout(layout: SparseLayout, block_size: int | None = None, permutation: torch.Tensor | None = None) -> BlockLayout:
    """Tile counts of the layout with tokens taken in ``permutation`` order (default: (f h w) order)."""
    block_size = layout.block_size if block_size is None else block_size
    classes, regions = token_classes(layout)
    if permutation is not None:
        classes = classes[permutation.cpu()]
    num_classes = layout.num_frames * regions
    num_blocks = -(-layout.num_tokens // block_size)
    block = torch.arange(layout.num_tokens) // block_size
    histogram = torch.bincount(block * num_classes + classes, minlength=num_blocks * num_classes)
    histogram = rearrange(histogram, "(b c) -> b c", c=num_classes).double()
    # Counts stay below 2^53, so float64 products are exact integers.
    counts = histogram @ class_table(layout.frame_selection, regions).double() @ histogram.T
    return BlockLayout(
        block_size=block_size,
        pair_counts=counts.round().long(),
        block_sizes=histogram.sum(1).round().long(),
    )


def density_statistics(layout: SparseLayout, block_size: int | None = None) -> dict[str, float]:
    """token_density: allowed pairs / S^2; block_density: non-empty tiles / all tiles, and
    full_block_fraction: full tiles / non-empty tiles, in (f h w) order and after (frame, region)
    reordering (``reordered_*``)."""
    natural = block_layout(layout, block_size)
    reordered = block_layout(layout, block_size, frame_region_order(layout))
    statistics = {"token_density": float(natural.pair_counts.sum()) / layout.num_tokens**2}
    for prefix, blocks in (("", natural), ("reordered_", reordered)):
        nonempty = int(blocks.nonempty.sum())
        statistics[f"{prefix}block_density"] = nonempty / blocks.pair_counts.numel()
        statistics[f"{prefix}full_block_fraction"] = int(blocks.full.sum()) / max(nonempty, 1)
    return statistics
