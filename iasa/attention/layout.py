"""The sparse layout of one clip: the data from which the rule decides which keys every query token sees.

The rule itself is stated once, in iasa.attention.masks (paper section 3.2: dense within a latent frame,
and region to region on the frames chosen for it; background never crosses frames). It sees a token
only through its (frame, region) class. Tokens are in Wan's (f h w) order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from iasa.attention.config import LayoutRuleConfig

BACKGROUND = 0


# eq=False: layouts compare and hash by identity, so kernels can cache per layout (a block mask built
# once serves all 40 layers and every denoising step).
@dataclass(frozen=True, eq=False)
class SparseLayout:
    """frame_selection: (T, T) bool, [tq, tk] True when frame tk is chosen for query frame tq; the
    diagonal is True. token_regions: (T, N) int64 region id of every token (0 = background), N = h * w.
    grid_size: (h, w) of the token grid of one latent frame. block_size: tile size of block-sparse
    kernels. region_names: the name of region id i + 1 at index i (config.regions)."""

    frame_selection: torch.Tensor
    token_regions: torch.Tensor
    grid_size: tuple[int, int]
    block_size: int = LayoutRuleConfig.block_size
    region_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        frames, tokens = self.token_regions.shape
        if self.frame_selection.shape != (frames, frames):
            raise ValueError(
                f"frame_selection has shape {tuple(self.frame_selection.shape)}, expected ({frames}, {frames})"
            )
        if self.grid_size[0] * self.grid_size[1] != tokens:
            raise ValueError(f"grid {self.grid_size} does not hold {tokens} tokens per frame")

    @property
    def num_frames(self) -> int:
        return self.token_regions.shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.token_regions.shape[1]

    @property
    def num_tokens(self) -> int:
        return self.token_regions.numel()

    def to(self, device: torch.device | str) -> "SparseLayout":
        """The same layout with its tensors on ``device`` (block_size and region_names kept). Kernels cache
        per layout object: move a layout once, not at every step."""
        return replace(
            self, frame_selection=self.frame_selection.to(device), token_regions=self.token_regions.to(device)
        )

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What saving the layout writes: its tensors (CPU, contiguous: ready for a safetensors file) and every
        other field as JSON-able metadata. `from_state` is the inverse."""
        tensors = {name: getattr(self, name).cpu().contiguous() for name in LAYOUT_TENSORS}
        metadata = {
            "grid_size": list(self.grid_size), "block_size": self.block_size, "region_names": list(self.region_names)
        }
        return tensors, metadata

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "SparseLayout":
        """The layout `state` gave these tensors and metadata for."""
        missing = [name for name in LAYOUT_TENSORS if name not in tensors]
        missing += [key for key in LAYOUT_METADATA if key not in metadata]
        if missing:
            raise ValueError(f"a saved layout lacks {missing}")
        return cls(
            frame_selection=tensors["frame_selection"],
            token_regions=tensors["token_regions"],
            grid_size=tuple(int(side) for side in metadata["grid_size"]),
            block_size=int(metadata["block_size"]),
            region_names=tuple(metadata["region_names"]),
        )


# The one region of a layout without region restriction: the whole frame.
WHOLE_FRAME = "frame"


def without_regions(layout: SparseLayout) -> SparseLayout:
    """The global-only variant of a layout: every token in one region, so a query token sees every token of the
    frames chosen for it (the frame selection alone; within its own frame attention is dense anyway)."""
    return replace(layout, token_regions=torch.ones_like(layout.token_regions), region_names=(WHOLE_FRAME,))


# What SparseLayout.state writes: the tensors, and the metadata keys of the other fields.
LAYOUT_TENSORS = ("frame_selection", "token_regions")
LAYOUT_METADATA = ("grid_size", "block_size", "region_names")
