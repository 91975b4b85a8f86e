"""The fast path's plan of one clip: which tokens cross frames, grouped so a kernel can walk them.

The sparse rule splits into two parts that never overlap:
- own frame: every token attends to its whole latent frame (dense, run as a batch of frames);
- cross region: a region token of frame t attends to the tokens of the same region in every frame chosen
  for t other than t itself.
Only region tokens (not background) take part in the second part. They are numbered in a compact
order sorted by (frame, region), so each (frame, region) pair is one contiguous *segment*; a segment's
keys are a few other segments, listed back to back. Kernels walk query tiles (fixed-size pieces of one
segment) over their key list, and key tiles over the list of queries that read them (for dK, dV).

The plan is built once per layout (per clip) and reused by every layer and step; a small cache keyed by
the layout object makes repeated calls free. Everything depends only on the layout's values, never on a
compiled shape, so new poses never trigger a recompilation.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from iasa.attention.layout import BACKGROUND, SparseLayout

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

    token_frame, token_position, token_region: (M,) int64 latent frame, position in that frame and
        region id of every compact row.
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
    frame_selection: torch.Tensor
    token_frame: torch.Tensor
    token_position: torch.Tensor
    token_region: torch.Tensor
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


def _concatenated_rows(lists: list[list[int]], starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment lists of segment ids -> (offsets (S + 1,), compact rows of the listed segments,
    concatenated)."""
    pieces = [np.arange(starts[k], ends[k]) for neighbours in lists for k in neighbours]
    sizes = [sum(int(ends[k] - starts[k]) for k in neighbours) for neighbours in lists]
    pointer = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    rows = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
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
    """Group a layout's region tokens by (frame, region) and list which segments meet across frames.

    Runs in NumPy on the CPU (tens of thousands of tokens, a few hundred segments: thread pools only
    cost time here) and moves all tables to `device` in one copy.
    """
    regions = layout.token_regions.detach().cpu().numpy().astype(np.int64)
    selection = layout.frame_selection.detach().cpu().numpy().astype(bool)
    frames, tokens_per_frame = regions.shape

    flat = regions.reshape(-1)
    region_token = np.flatnonzero(flat != BACKGROUND)
    region_of = flat[region_token]
    frame_of = region_token // tokens_per_frame
    num_regions = int(region_of.max()) + 1 if region_of.size else 1
    order = np.argsort(frame_of * num_regions + region_of, kind="stable")
    region_token, region_of, frame_of = region_token[order], region_of[order], frame_of[order]

    counts = np.bincount(frame_of * num_regions + region_of, minlength=frames * num_regions)
    present = np.flatnonzero(counts)
    sizes = counts[present]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    seg_frame = (present // num_regions).tolist()
    seg_region = (present % num_regions).tolist()
    seg_size = sizes.tolist()
    segment_of = {(f, r): s for s, (f, r) in enumerate(zip(seg_frame, seg_region))}

    chosen = [np.flatnonzero(selection[f]).tolist() for f in range(frames)]
    key_lists: list[list[int]] = [[] for _ in seg_frame]
    query_lists: list[list[int]] = [[] for _ in seg_frame]
    cross_pairs = 0
    for s, (f, r) in enumerate(zip(seg_frame, seg_region)):
        for other in chosen[f]:
            k = segment_of.get((other, r))
            if other == f or k is None:
                continue
            key_lists[s].append(k)
            query_lists[k].append(s)
            cross_pairs += seg_size[s] * seg_size[k]

    key_ptr, key_rows = _concatenated_rows(key_lists, starts, ends)
    query_ptr, query_rows = _concatenated_rows(query_lists, starts, ends)
    forward_sizes = tuple(sorted(forward_tile_tokens, reverse=True))
    forward_tiles = _forward_tiles(starts, ends, np.diff(key_ptr), forward_sizes)
    tables = {
        "token_index32": region_token,
        "token_frame": frame_of,
        "token_position": region_token % tokens_per_frame,
        "token_region": region_of,
        "frame_selection": selection,
        **{f"forward_tiles_{size}": tiles for size, tiles in zip(forward_sizes, forward_tiles)},
        "backward_tiles": _tiles(starts, ends, backward_tile_tokens),
        "key_list_ptr": key_ptr,
        "key_list_token": region_token[key_rows],
        "query_list_ptr": query_ptr,
        "query_list": query_rows,
        "query_list_token": region_token[query_rows],
    }
    # One host-to-device copy of everything as int32, then views (and a few tiny casts on the device).
    packed = torch.from_numpy(np.concatenate([t.astype(np.int32).reshape(-1) for t in tables.values()]))
    pieces = torch.split(packed.to(device), [t.size for t in tables.values()])
    on_device = {name: piece.view(tables[name].shape) for name, piece in zip(tables, pieces)}
    return CrossRegionPlan(
        num_frames=frames,
        tokens_per_frame=tokens_per_frame,
        frame_selection=on_device.pop("frame_selection").bool(),
        token_frame=on_device.pop("token_frame").long(),
        token_position=on_device.pop("token_position").long(),
        token_region=on_device.pop("token_region").long(),
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
