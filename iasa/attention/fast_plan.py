"""The fast path's plan of one clip: which tokens cross frames, grouped so a kernel can walk them.

The rule's class table (masks.class_table) splits into two parts that never overlap:
- own frame: the table's same-frame blocks, which the fast path runs as dense attention of every token
  over its whole latent frame (a batch of frames); cross_frame_part checks that they are dense;
- cross frame: the rest of the table, which lists for every (frame, region) class the classes of
  other frames it may see (under the paper's rule: the same region in the frames chosen for its own).
The tokens of the second part (every region token, and background only where the table links it across
frames, which the paper's rule never does) are numbered in a compact order sorted by class, so each
(frame, region) pair is one contiguous *segment*; a segment's keys are the segments its row of the cross
part names, listed back to back. Kernels walk query tiles (fixed-size pieces of one segment) over
their key list, and key tiles over the list of queries that read them (for dK, dV).

The plan is built once per layout (per clip) and reused by every layer and step; a small cache keyed by
the layout object makes repeated calls free. Everything depends only on the layout's values, never on a
compiled shape, so new poses never trigger a recompilation.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, repeat

from iasa.attention.layout import BACKGROUND, SparseLayout
from iasa.attention.masks import class_table, token_classes

# Rows of one kernel tile. Forward: segments are cut into tiles of the first size and each segment's
# remainder goes to the smallest size that holds it (a 128-row tile does a row of work a little faster, a
# 64-row tile pads less). On an H200 at 720x1280x81, K = 8, this mix took 0.93-0.98 of the time of
# 128-row or 64-row tiles alone; heaviest-first order another 1 %. Backward: 64 rows.
FORWARD_TILE_TOKENS = (128, 64)
BACKWARD_TILE_TOKENS = 64
# How many prepared plans to keep (one per live layout; layers of one clip share one).
PLAN_CACHE_SIZE = 8


@dataclass(frozen=True)
class Tiling:
    """Segments cut into tiles of at most `tokens` compact rows: start, end, segment are (tiles,) int32."""

    tokens: int
    start: torch.Tensor
    end: torch.Tensor
    segment: torch.Tensor

    @property
    def count(self) -> int:
        return self.start.numel()


@dataclass(frozen=True)
class CrossRegionPlan:
    """Index tables of one clip on one device. M = number of region tokens, S = segments. Tables are
    int32 unless said otherwise; "compact row" = index into the (frame, region)-sorted region tokens.

    token_frame, token_position, token_class: (M,) int64 latent frame, position in that frame and
        (frame, region) class of every compact row.
    cross_table: (C, C) bool, the cross-frame part of the rule's class table (cross_frame_part).
    token_index32: (M,) the token (frame * N + position) of every compact row.
    forward_tilings: the query tiles of the forward kernel, one Tiling per tile size (largest first, one
        launch each), only of segments that have cross keys, heaviest (longest key list) first so that
        the launch ends on short tiles.
    backward_tiling: the query tiles of the dQ kernel, which are also the key tiles of the dK, dV kernel.
    key_list_ptr: (S + 1,) offsets into key_list_token: the keys of each segment, all key segments
        concatenated, so a kernel walks them in full inner tiles.
    key_list_token: the tokens of those keys.
    query_list_ptr: (S + 1,) offsets into query_list / query_list_token: the queries that read each
        segment as keys, concatenated.
    query_list, query_list_token: their compact rows and tokens.
    cross_pairs: number of allowed (query, key) token pairs across frames, for density statistics.
    """

    num_frames: int
    tokens_per_frame: int
    cross_table: torch.Tensor
    token_frame: torch.Tensor
    token_position: torch.Tensor
    token_class: torch.Tensor
    token_index32: torch.Tensor
    forward_tilings: tuple[Tiling, ...]
    backward_tiling: Tiling
    key_list_ptr: torch.Tensor
    key_list_token: torch.Tensor
    query_list_ptr: torch.Tensor
    query_list: torch.Tensor
    query_list_token: torch.Tensor
    cross_pairs: int

    @property
    def num_region_tokens(self) -> int:
        return self.token_frame.numel()


def cross_frame_part(table: torch.Tensor, frames: int) -> torch.Tensor:
    """The class pairs of the table (C, C) that lie in different frames: (C, C) bool.

    The fast path runs each token's own frame as dense attention, which is only the rule if the
    table's same-frame blocks are full: a rule that hides part of a frame needs another kernel.
    """
    blocks = rearrange(table, "(tq rq) (tk rk) -> tq tk rq rk", tq=frames, tk=frames)
    own = torch.eye(frames, dtype=torch.bool)
    if not blocks[own].all():
        raise ValueError(
            "the sparse rule (iasa.attention.masks) hides some token pairs within a latent frame, but the fast "
            "path runs every frame as dense attention; use backend='flex' or 'reference' for such a rule"
        )
    regions = table.shape[0] // frames
    return table & ~repeat(own, "tq tk -> (tq rq) (tk rk)", rq=regions, rk=regions)


def _concatenated_rows(
    owner: np.ndarray, listed: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment lists of segments, given as (owner, listed) pairs sorted by owner -> (offsets (S + 1,),
    compact rows of the listed segments, concatenated)."""
    lengths = ends[listed] - starts[listed]
    ends_of_pieces = np.cumsum(lengths)
    pointer = np.concatenate([[0], ends_of_pieces])[np.searchsorted(owner, np.arange(len(starts) + 1))]
    rows = np.arange(int(ends_of_pieces[-1]) if lengths.size else 0)
    rows += np.repeat(starts[listed] - (ends_of_pieces - lengths), lengths)
    return pointer, rows


def _tiles(starts: np.ndarray, ends: np.ndarray, tokens: int) -> np.ndarray:
    """(3, tiles): start, end and segment of every tile of at most `tokens` rows."""
    tiles = [(row, min(row + tokens, b), s) for s, (a, b) in enumerate(zip(starts, ends)) for row in range(a, b, tokens)]
    return np.array(tiles, dtype=np.int64).reshape(-1, 3).T


def _forward_tiles(starts: np.ndarray, ends: np.ndarray, key_counts: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Per tile size (descending): (3, tiles) start, end and segment. Segments without keys get no tile;
    a segment is cut into tiles of the largest size and its remainder goes to the smallest size that holds
    it. Within a size, tiles of longer key lists come first."""
    sizes = tuple(sorted(sizes, reverse=True))
    largest = sizes[0]
    tiles: dict[int, list[tuple[int, int, int]]] = {size: [] for size in sizes}
    for s in np.argsort(-key_counts, kind="stable").tolist():
        if key_counts[s] == 0:
            continue
        a, b = int(starts[s]), int(ends[s])
        full_end = a + (b - a) // largest * largest
        tiles[largest].extend((row, row + largest, s) for row in range(a, full_end, largest))
        if full_end < b:
            tiles[min(size for size in sizes if size >= b - full_end)].append((full_end, b, s))
    return [np.array(tiles[size], dtype=np.int64).reshape(-1, 3).T for size in sizes]


def build_cross_region_plan(
    layout: SparseLayout,
    device: torch.device | str,
    forward_tile_tokens: tuple[int, ...] = FORWARD_TILE_TOKENS,
    backward_tile_tokens: int = BACKWARD_TILE_TOKENS,
) -> CrossRegionPlan:
    """Group the tokens of the cross-frame part by (frame, region) class and list which segments meet.

    Runs in NumPy on the CPU (tens of thousands of tokens, a few hundred segments: thread pools only
    cost time here) and moves all tables to `device` in one copy.
    """
    frames, tokens_per_frame = layout.token_regions.shape
    token_class, regions = token_classes(layout)
    cross = cross_frame_part(class_table(layout.frame_selection, regions), frames)
    cross_np = cross.numpy()
    token_class = token_class.numpy()

    # Every region class takes part (keys or not, this clip); background only where the table links it.
    takes_part = (np.arange(frames * regions) % regions != BACKGROUND) | cross_np.any(0) | cross_np.any(1)
    compact_token = np.flatnonzero(takes_part[token_class])
    order = np.argsort(token_class[compact_token], kind="stable")
    compact_token = compact_token[order]
    compact_class = token_class[compact_token]

    counts = np.bincount(compact_class, minlength=frames * regions)
    present = np.flatnonzero(counts)  # the segments: classes with tokens, in class order
    sizes = counts[present]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    segment_cross = cross_np[np.ix_(present, present)]
    key_owner, key_segment = np.nonzero(segment_cross)  # row-major: by segment, its keys in class order
    query_owner, query_segment = np.nonzero(segment_cross.T)
    cross_pairs = int((sizes[key_owner] * sizes[key_segment]).sum())

    key_ptr, key_rows = _concatenated_rows(key_owner, key_segment, starts, ends)
    query_ptr, query_rows = _concatenated_rows(query_owner, query_segment, starts, ends)
    forward_sizes = tuple(sorted(forward_tile_tokens, reverse=True))
    forward_tiles = _forward_tiles(starts, ends, np.diff(key_ptr), forward_sizes)
    tables = {
        "token_index32": compact_token,
        "token_frame": compact_token // tokens_per_frame,
        "token_position": compact_token % tokens_per_frame,
        "token_class": compact_class,
        "cross_table": cross_np,
        **{f"forward_tiles_{size}": tiles for size, tiles in zip(forward_sizes, forward_tiles)},
        "backward_tiles": _tiles(starts, ends, backward_tile_tokens),
        "key_list_ptr": key_ptr,
        "key_list_token": compact_token[key_rows],
        "query_list_ptr": query_ptr,
        "query_list": query_rows,
        "query_list_token": compact_token[query_rows],
    }
    # One host-to-device copy of everything as int32, then views (and a few tiny casts on the device).
    packed = torch.from_numpy(np.concatenate([t.astype(np.int32).reshape(-1) for t in tables.values()]))
    pieces = torch.split(packed.to(device), [t.size for t in tables.values()])
    on_device = {name: piece.view(tables[name].shape) for name, piece in zip(tables, pieces)}
    return CrossRegionPlan(
        num_frames=frames,
        tokens_per_frame=tokens_per_frame,
        cross_table=on_device.pop("cross_table").bool(),
        token_frame=on_device.pop("token_frame").long(),
        token_position=on_device.pop("token_position").long(),
        token_class=on_device.pop("token_class").long(),
        forward_tilings=tuple(Tiling(size, *on_device.pop(f"forward_tiles_{size}")) for size in forward_sizes),
        backward_tiling=Tiling(backward_tile_tokens, *on_device.pop("backward_tiles")),
        cross_pairs=cross_pairs,
        **on_device,
    )


_plan_cache: dict[tuple[int, str], tuple[weakref.ref, CrossRegionPlan]] = {}


def prepare_fast_layout(layout: SparseLayout, device: torch.device | str) -> CrossRegionPlan:
    """The plan of `layout` on `device`, built on first use and cached while the layout object lives.

    Call it once per clip to pay the build cost up front; later calls with the same layout object are a
    dictionary look-up. A new layout object (new poses) gets a new plan; nothing is compiled.
    """
    key = (id(layout), str(torch.device(device)))
    cached = _plan_cache.get(key)
    if cached is not None and cached[0]() is layout:
        return cached[1]
    plan = build_cross_region_plan(layout, device)
    while len(_plan_cache) >= PLAN_CACHE_SIZE:
        _plan_cache.pop(next(iter(_plan_cache)))
    _plan_cache[key] = (weakref.ref(layout), plan)
    return plan
