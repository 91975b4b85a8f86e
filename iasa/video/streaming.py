"""Streaming generation with the 1-step causal student: chunk by chunk, each chunk's queries attending to keys
cached from earlier chunks.

The student's output for latent frame t depends only on frames <= t: its sparse rule selects past frames only
("past" frame selection), and everything else in the DiT (patch embedding, cross-attention, FFN, head) works
token by token. So the full clip's computation can run C latent frames at a time (`generate_chunk`): the chunk's
tokens attend by the project's rule (iasa.attention.masks: their own frame, frame 0 and the K most pose-similar
earlier frames, region to region) to the cached keys of earlier frames and to the chunk's own, through the same
kernels (iasa.attention.chunk_layout). With one denoising step the cached keys of frame t are exactly those the
full clip computes for it (from its noisy latents at the one timestep), so within the trained length the stream
equals the full-clip output (tests/test_streaming.py: float32, 1e-5, dense and sparse).

What a chunk waits for (the inputs of frame t):
- its pose features: UniAnimate's pose guider has four temporal 3-tap convolutions at full rate and two
  stride-2 ones, so latent frame t's feature reads video pose frames up to 4t + 4: one latent frame (4 video
  frames) of look-ahead (`POSE_LOOKAHEAD_VIDEO_FRAMES`). `PoseFeatureStream` recomputes the guider on a
  window of pose frames around the chunk, wide enough that the window's borders cannot reach the chunk's
  features, so they equal the full clip's; the end of the stream pads as the end of a clip does.
- its keypoints (for the layout), its noise (seeded per frame: `frame_noise`) and the reference condition y.

Past the trained length (`StreamingConfig.trained_latent_frames`, 21):
- The cache is bounded: frame 0 and at most `cache_frames` past frames. Once over budget, the frame that adds
  least to the cache's coverage of pose space goes (`evict_redundant_frame`: the one nearest, by the rigid
  pose distance, to another cached frame; ties: the older). Under the sparse rule only region tokens are
  cached (background never crosses frames), so memory is constant over a stream of any length: the cache is
  one preallocated buffer (iasa.video.stream_cache), an evicted frame's slot overwritten by a new frame. The
  pose distances among the cached frames are kept with them (StreamState.distances): a chunk computes only
  its own frames'.
- Temporal RoPE positions are remapped into [0, T - 1] (`rope_position`), T = trained length: while the
  newest frame is below T every frame keeps its index (the full clip's positions); after, every frame but 0
  slides back by newest - (T - 1), so the chunk sits at the top of the range and recent frames keep their
  true distances to it; frames older than that are clamped to position 1 (they stay "long ago", ordered
  before everything recent), and frame 0 stays at 0 (the reference frame, as in training). The I2V condition
  y of a frame is the one at its position (past frame 1 it is the encoding of blank frames).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from einops import rearrange, repeat

from iasa.attention.block_layout import inverse_permutation
from iasa.attention.chunk_layout import ChunkLayout
from iasa.attention.config import SparseAttentionConfig
from iasa.attention.frame_selection import select_frames
from iasa.attention.layout import BACKGROUND
from iasa.attention.pose_distance import pairwise_pose_distance, upper_body_points
from iasa.attention.regions import label_tokens, region_token_masks
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.video.attention_patch import LayerKeyValues, StreamedKeys
from iasa.video.config import LATENT_CHANNELS, StreamingConfig
from iasa.video.denoiser import FlowConditions, RopeTables, predict_flow_streamed
from iasa.video.latent_grid import TEMPORAL_STRIDE, latent_frame_groups
from iasa.video.pose_guider import LEADING_POSE_REPEATS, PoseGuider
from iasa.video.stream_cache import StreamCache

# Video pose frames past a latent frame's own that its pose feature reads (see the module docstring).
POSE_LOOKAHEAD_VIDEO_FRAMES = 4
# Latent frames of pose features before a window's first wanted one whose inputs the window must hold: the
# feature of latent r reads padded pose frames >= 4 r - 7, two latent frames' worth back.
POSE_HISTORY_LATENT_FRAMES = 2


# ---------------------------------------------------------------------------------------------- frame inputs
@dataclass(frozen=True)
class LatentFramePose:
    """What the layout needs of one latent frame: points (V, B, 2) float64 and visible (V, B) bool of its V
    video frames (iasa.attention.pose_distance.upper_body_points), regions (N,) int64 region id per token."""

    points: np.ndarray
    visible: np.ndarray
    regions: torch.Tensor


def latent_frame_poses(
    keypoints: WholeBodyKeypoints, config: SparseAttentionConfig, grid_size: tuple[int, int]
) -> list[LatentFramePose]:
    """The pose inputs of every latent frame of a clip of 4n + 1 keypoint frames (as build_sparse_layout
    computes them for the whole clip)."""
    points, visible = upper_body_points(keypoints, config.min_keypoint_confidence, config.pose_hand_centroids)
    regions = torch.from_numpy(label_tokens(region_token_masks(keypoints, config, grid_size)))
    if not config.local_regions:  # the global-only rule (iasa.attention.layout.without_regions): one region
        regions = torch.ones_like(regions)
    return [
        LatentFramePose(np.asarray(points[list(group)]), np.asarray(visible[list(group)]), regions[latent])
        for latent, group in enumerate(latent_frame_groups(keypoints.num_frames))
    ]


def latent_frame_poses_from(
    keypoints: WholeBodyKeypoints, first: int, config: SparseAttentionConfig, grid_size: tuple[int, int]
) -> list[LatentFramePose]:
    """latent_frame_poses of a clip's latent frames first, first + 1, ..., from keypoints of its video frames
    4 first - 4 (the last of latent frame first - 1; frame 0 when first is 0) to the last of a latent frame, as
    a stream has them. Each latent frame's poses come from its own video frames, except the limb width of a
    frame without both shoulders (iasa.attention.regions.frame_shapes: the median over the frames at hand,
    here these instead of the whole clip's)."""
    if (keypoints.num_frames - 1) % TEMPORAL_STRIDE:
        raise ValueError(
            f"{keypoints.num_frames} video frames: a stand-in for frame 0 and whole latent frames are 4n + 1"
        )
    poses = latent_frame_poses(keypoints, config, grid_size)
    return poses if first == 0 else poses[1:]


def _membership(poses: list[LatentFramePose]) -> np.ndarray:
    """(T, F) 0/1: which of the F video frames (the poses' concatenated) each latent frame covers."""
    membership = np.zeros((len(poses), sum(len(pose.points) for pose in poses)))
    start = 0
    for latent, pose in enumerate(poses):
        membership[latent, start : start + len(pose.points)] = 1.0
        start += len(pose.points)
    return membership


def latent_distances(
    poses: list[LatentFramePose], align_scale: bool, columns: list[LatentFramePose] | None = None
) -> torch.Tensor:
    """(T, T) float64 pose distance between latent frames: the mean over the comparable pairs of their video
    frames (iasa.attention.pose_distance.latent_pose_distance), +inf where none is comparable. With `columns`:
    (T, T') from the poses (rows, aligned onto) to the columns' frames."""
    columns = poses if columns is None else columns
    points, visible = (np.concatenate([getattr(pose, name) for pose in poses]) for name in ("points", "visible"))
    other_points, other_visible = (np.concatenate([getattr(pose, name) for pose in columns]) for name in ("points", "visible"))
    video = np.asarray(pairwise_pose_distance(points, visible, other_points, other_visible, align_scale))
    rows, cols = _membership(poses), _membership(columns)
    comparable = np.isfinite(video)
    total = rows @ np.where(comparable, video, 0.0) @ cols.T
    count = rows @ comparable.astype(np.float64) @ cols.T
    return torch.from_numpy(np.divide(total, count, out=np.full_like(total, np.inf), where=count > 0))


def extended_distances(
    known: torch.Tensor | None, old: list[LatentFramePose], new: list[LatentFramePose], align_scale: bool
) -> torch.Tensor:
    """latent_distances of old + new, (n + C, n + C), from known = those among the n old frames: only the pairs
    with a new frame are computed (a chunk's C rows and columns instead of the whole matrix)."""
    everything = old + new
    result = torch.empty(len(everything), len(everything), dtype=torch.float64)
    result[len(old) :] = latent_distances(new, align_scale, everything)
    if old:
        result[: len(old), : len(old)] = known
        result[: len(old), len(old) :] = latent_distances(old, align_scale, new)
    return result


def frame_noise(seed: int, frame: int, grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Starting noise (1, 16, 1, h, w) of latent frame `frame`, seeded per frame (a stream has no length to
    draw a whole tensor for), on the CPU so a seed gives the same video on any device."""
    generator = torch.Generator("cpu").manual_seed(seed * 1_000_003 + frame)
    return torch.randn((1, LATENT_CHANNELS, 1, *grid), generator=generator).to(device=device, dtype=dtype)


class PoseFeatureStream:
    """The pose guider's features of a stream's latent frames, from pose frames as they arrive.

    push((f, 3, H, W) in [0, 1]) adds video pose frames; finish() marks the end (the guider's zero padding then
    applies, as at the end of a clip). features(first, stop) gives (1, dim, stop - first, H/16, W/16), equal to
    the full clip's; it needs video frames up to 4 (stop - 1) + POSE_LOOKAHEAD_VIDEO_FRAMES (or the end). Only
    the frames a later window can read are kept.
    """

    def __init__(self, guider: PoseGuider) -> None:
        self.guider = guider
        self.padded: torch.Tensor | None = None  # (3, p, H, W): the leading repeats then the frames
        self.offset = 0  # padded index of self.padded[:, 0]
        self.finished = False

    @property
    def received(self) -> int:
        """Video frames pushed so far."""
        return 0 if self.padded is None else self.offset + self.padded.shape[1] - LEADING_POSE_REPEATS

    def push(self, frames: torch.Tensor) -> None:
        frames = rearrange(frames, "f c h w -> c f h w")
        if self.padded is None:
            frames = torch.cat([repeat(frames[:, :1], "c 1 h w -> c r h w", r=LEADING_POSE_REPEATS), frames], dim=1)
            self.padded = frames
        else:
            self.padded = torch.cat([self.padded, frames], dim=1)

    def finish(self) -> None:
        self.finished = True

    def ready_latent_frames(self) -> int:
        """Latent frames whose features can be computed now."""
        if self.received == 0:
            return 0
        if self.finished:
            return (self.received - 1) // TEMPORAL_STRIDE + 1
        return max(0, (self.received - 1 - POSE_LOOKAHEAD_VIDEO_FRAMES) // TEMPORAL_STRIDE + 1)

    def features(self, first: int, stop: int) -> torch.Tensor:
        if stop > self.ready_latent_frames():
            raise ValueError(f"pose features of latent frames up to {stop - 1} need more pose frames")
        start = TEMPORAL_STRIDE * max(0, first - POSE_HISTORY_LATENT_FRAMES)
        end = min(TEMPORAL_STRIDE * stop + TEMPORAL_STRIDE, self.offset + self.padded.shape[1])
        end -= (end - start) % TEMPORAL_STRIDE  # whole latent frames (the stream's end is whole: 4n + 1 frames)
        window = self.padded[:, start - self.offset : end - self.offset]
        features = self.guider.dwpose_embedding(window[None])
        skip = first - start // TEMPORAL_STRIDE
        self._drop_before(start)
        return features[:, :, skip : skip + stop - first]

    def _drop_before(self, padded_index: int) -> None:
        # Later windows start at or after this chunk's (chunks only move forward).
        drop = padded_index - self.offset
        if drop > 0:
            self.padded = self.padded[:, drop:]
            self.offset = padded_index


# --------------------------------------------------------------------------------------------- the cache
@dataclass(frozen=True)
class CachedFrame:
    """A latent frame in the cache: its index, pose, which of its tokens (positions in (h w) order) the cache
    holds, region by region as they lie in its slot, and the slot (iasa.video.stream_cache)."""

    index: int
    pose: LatentFramePose
    tokens: torch.Tensor
    slot: int


@dataclass(frozen=True, eq=False)
class StreamState:
    """A stream after the frames generated so far: the cached frames in frame order (frame 0 first), the
    preallocated key/value cache holding them (None before the first chunk; written in place by later chunks,
    so a state is current only until the next chunk), and the next latent frame's index. slot_tokens: the most
    tokens one cached frame may hold (stream_slot_tokens of the stream's poses), the cache's slot size; None:
    the largest among the first chunk's frames, the cache growing (one copy) when a later frame holds more.
    rope: the DiT's RoPE tables on the cache's device (made by the first chunk); distances: (n, n) float64
    latent_distances among the cached frames (None: computed from their poses), so a chunk computes only its
    own frames' distances."""

    frames: tuple[CachedFrame, ...] = ()
    cache: StreamCache | None = None
    next_frame: int = 0
    slot_tokens: int | None = None
    rope: RopeTables | None = None
    distances: torch.Tensor | None = None

    @property
    def cached_tokens(self) -> int:
        return sum(int(frame.tokens.numel()) for frame in self.frames)

    @property
    def layers(self) -> tuple[LayerKeyValues, ...] | None:
        """Per DiT layer, views of the keys and values (b, slots * slot_tokens, dim) of the cache's slots."""
        if self.cache is None:
            return None
        slots = slice(self.cache.slot_start(0), self.cache.capacity)
        return tuple(LayerKeyValues(k[:, slots], v[:, slots]) for k, v in zip(self.cache.keys, self.cache.values))

    def cache_bytes(self) -> int:
        return 0 if self.cache is None else self.cache.num_bytes()


def cached_tokens_of(pose: LatentFramePose, rule: SparseAttentionConfig | None) -> torch.Tensor:
    """Which tokens of a frame the cache holds, region by region (stable), as positions in (h w) order: under
    the sparse rule its region tokens (background never crosses frames), dense every token."""
    order = torch.sort(pose.regions, stable=True).indices
    if rule is None:
        return order
    return order[int((pose.regions == BACKGROUND).sum()) :]


def stream_slot_tokens(poses: list[LatentFramePose], rule: SparseAttentionConfig | None) -> int:
    """The most tokens a frame of these poses caches: the slot size that holds every frame of the stream."""
    return max(int(cached_tokens_of(pose, rule).numel()) for pose in poses)


def rope_position(frame: int, newest: int, trained_frames: int) -> int:
    """Temporal RoPE position of latent frame `frame` in a chunk whose newest frame is `newest` (module
    docstring): the frame's index within the trained length, else slid back to keep `newest` at T - 1."""
    if newest < trained_frames or frame == 0:
        return frame
    return max(1, frame - (newest - (trained_frames - 1)))


def evict_redundant_frame(distance: torch.Tensor) -> int:
    """Which cached frame goes when the cache is over budget. distance (n, n) float64 between the cached
    frames in frame order, frame 0 at index 0 (never evicted, but it covers its poses). The candidate whose
    nearest other cached frame is nearest goes (it adds least to the coverage of pose space); ties: the
    older. Returns its index in 1..n-1."""
    others = distance.clone().double()
    others.fill_diagonal_(torch.inf)
    nearest = others.min(dim=1).values[1:]
    largest = torch.finfo(torch.float64).max
    order = torch.sort(nearest.nan_to_num(posinf=largest), stable=True).indices
    return int(order[0]) + 1


def frames_to_keep(distance: torch.Tensor, cache_frames: int) -> list[int]:
    """Indices of the frames the cache keeps, of n frames in frame order (frame 0 first) with pose distances
    distance (n, n): all while within frame 0 + cache_frames, else evicting one redundant frame at a time."""
    kept = list(range(distance.shape[0]))
    while len(kept) > cache_frames + 1:
        del kept[evict_redundant_frame(distance[kept][:, kept])]
    return kept


# ---------------------------------------------------------------------------------------------- one chunk
@dataclass(frozen=True, eq=False)
class StreamConditions:
    """What every chunk of a stream shares: context (1, L, text_dim), clip_feature (1, 257, 1280), y (1, 20,
    T, h, w) for the trained length T with the reference-pose embedding added."""

    context: torch.Tensor
    clip_feature: torch.Tensor
    y: torch.Tensor


def chunk_area_start(cache: StreamCache, chunk: int) -> int:
    """First buffer position of a chunk of `chunk` frames: chunks sit at the end of the chunk area, so that a
    dense chunk's keys (its own, then the filled slots) are one contiguous run however short the chunk."""
    return (cache.chunk_frames - chunk) * cache.frame_tokens


def chunk_layout(
    cached: list[CachedFrame],
    chunk: list[LatentFramePose],
    cache: StreamCache,
    grid: tuple[int, int],
    rule: SparseAttentionConfig,
    distance: torch.Tensor | None = None,
) -> ChunkLayout:
    """The chunk's layout over the whole cache buffer: key frames are the cache's slots (slot s = key frame s),
    then the chunk's frames; the rule's "past" top-K is selected on the pose distances in frame order (cached
    frames, then the chunk's: "earlier" is "before"; distance, (n + C, n + C), or computed here) and written
    into slot order. Unused positions are padding."""
    grid_tokens = cache.frame_tokens
    if distance is None:
        distance = latent_distances([frame.pose for frame in cached] + chunk, rule.align_scale)
    selection = select_frames(distance, rule.top_k, "past", rule.keep_first_frame)
    frames = cache.slots + len(chunk)
    key_frame_ids = torch.tensor([frame.slot for frame in cached] + [cache.slots + c for c in range(len(chunk))])
    slot_selection = torch.eye(frames, dtype=torch.bool)
    slot_selection[key_frame_ids[:, None], key_frame_ids[None, :]] = selection
    key_frames = torch.full((cache.capacity,), frames, dtype=torch.long)  # padding unless written below
    key_regions = torch.full((cache.capacity,), BACKGROUND, dtype=torch.long)
    start = chunk_area_start(cache, len(chunk))
    for offset, pose in enumerate(chunk):
        area = slice(start + offset * grid_tokens, start + (offset + 1) * grid_tokens)
        key_frames[area] = cache.slots + offset
        key_regions[area] = torch.sort(pose.regions, stable=True).values
    for frame in cached:
        area = slice(cache.slot_start(frame.slot), cache.slot_start(frame.slot) + frame.tokens.numel())
        key_frames[area] = frame.slot
        key_regions[area] = frame.pose.regions[frame.tokens]
    query_regions = torch.stack([pose.regions for pose in chunk]).long()
    largest = max(int(query_regions.max()), int(key_regions.max()))
    return ChunkLayout(
        frame_selection=slot_selection,
        query_regions=query_regions,
        key_frames=key_frames,
        key_regions=key_regions,
        grid_size=grid,
        region_ids=max(largest, len(rule.regions)) + 1,
        block_size=rule.block_size,
        region_names=tuple(rule.regions),
    )


@torch.no_grad()
def generate_chunk(
    dit: torch.nn.Module,
    state: StreamState,
    noise: torch.Tensor,
    timestep: torch.Tensor,
    sigma: float,
    conditions: StreamConditions,
    pose_features: torch.Tensor | None,
    poses: list[LatentFramePose],
    config: StreamingConfig,
    rule: SparseAttentionConfig | None,
    backend: str = "reference",
    compiled: bool = False,
) -> tuple[torch.Tensor, StreamState]:
    """The next C latent frames of a stream, clean latents (1, 16, C, h, w), and the state after them.

    noise (1, 16, C, h, w): their starting noise; timestep (1,), sigma: the student's one step; pose_features
    (1, dim, C, h/2, w/2) (PoseFeatureStream) or None; poses: the C frames' LatentFramePose; rule: the sparse
    layout rule (None = dense: every cached token and the whole chunk). The DiT must be patched. The state's
    cache is written in place (allocated by the first chunk).

    compiled (speed.compile_dit): the chunks of the stream's fixed shape run the DiT blocks compiled
    (iasa.video.compiled_blocks), one compilation for the stream, the same numbers up to rounding. That shape:
    a whole chunk (chunk_latent_frames) over the whole cache buffer, keys padded to its capacity, which is every
    whole chunk of a sparse stream from the first on, and those of a dense stream once frame 0 and cache_frames
    past frames fill its slots (while they fill, each chunk has more keys). Other chunks (a dense stream's first
    ones, a shorter last chunk) run the eager blocks: each would otherwise compile once more. (A cache that grows,
    StreamState.slot_tokens None, has a new capacity: one more compilation per growth.)"""
    chunk = noise.shape[2]
    if len(poses) != chunk:
        raise ValueError(f"a chunk of {chunk} latent frames needs {chunk} frame poses, got {len(poses)}")
    if chunk > config.chunk_latent_frames:
        raise ValueError(f"a chunk of {chunk} latent frames is longer than chunk_latent_frames={config.chunk_latent_frames}")
    first = state.next_frame
    newest = first + chunk - 1
    trained = config.trained_latent_frames
    grid = (noise.shape[3] // 2, noise.shape[4] // 2)
    tokens = grid[0] * grid[1]
    kept_tokens = [cached_tokens_of(pose, rule) for pose in poses]
    cache = state.cache
    if cache is None:
        block = dit.blocks[0].self_attn
        cache = StreamCache.allocate(
            len(dit.blocks), noise.shape[0], block.q.out_features, config.chunk_latent_frames, tokens,
            config.cache_frames + 1, state.slot_tokens or max(int(t.numel()) for t in kept_tokens),
            noise.device, noise.dtype,
        )  # fmt: skip
    positions = torch.tensor([rope_position(first + i, newest, trained) for i in range(chunk)])

    # Where the chunk's tokens go: its frames at the end of the chunk area, each region by region.
    start = chunk_area_start(cache, chunk)
    order = [torch.sort(pose.regions, stable=True).indices for pose in poses]
    chunk_positions = torch.cat(
        [start + offset * tokens + inverse_permutation(frame_order) for offset, frame_order in enumerate(order)]
    )
    # The cached frames the chunk rotates: every slot under the sparse rule (one static shape for the kernels),
    # the filled ones (a prefix) when dense.
    cached = list(state.frames)
    past_start = cache.slot_start(0)
    past_stop = cache.capacity if rule is not None else cache.slot_start(len(cached))
    rope = state.rope or RopeTables.of(dit, noise.device)
    streamed = StreamedKeys(
        cache, chunk_positions.to(noise.device, non_blocking=True), past_start, past_stop,
        *rope.at(*cached_token_grid(cached, cache, past_stop, newest, trained, grid[1])),
        0 if rule is not None else start, cache.capacity if rule is not None else past_stop,
    )  # fmt: skip
    align_scale = rule.align_scale if rule is not None else False
    known = state.distances
    if known is None and cached:
        known = latent_distances([f.pose for f in cached], align_scale)
    distance = extended_distances(known, [f.pose for f in cached], poses, align_scale)
    layout = None if rule is None else chunk_layout(cached, poses, cache, grid, rule, distance).to(noise.device)
    flow_conditions = FlowConditions(
        conditions.context, conditions.clip_feature, conditions.y[:, :, positions.to(conditions.y.device)], pose_features
    )
    flow = predict_flow_streamed(
        dit, noise, timestep, flow_conditions, positions, rope, streamed, layout, backend,
        compiled=compiled and streamed.has_stream_shape,
    )  # fmt: skip
    latents = noise - flow * sigma

    # Cache the chunk (under the sparse rule only its region tokens), the evicted frames' slots freed first.
    new_frames = [CachedFrame(first + offset, pose, kept_tokens[offset], -1) for offset, pose in enumerate(poses)]
    kept = frames_to_keep(distance, config.cache_frames)
    cache, frames = store_kept_frames(cache, cached, new_frames, kept, start)
    return latents, replace(
        state, frames=frames, cache=cache, rope=rope, next_frame=newest + 1, distances=distance[kept][:, kept]
    )  # fmt: skip


def cached_token_grid(
    cached: list[CachedFrame], cache: StreamCache, past_stop: int, newest: int, trained: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Temporal RoPE position, row and column (s,) int64 of buffer positions slot_start(0)..past_stop - 1 in a
    chunk whose newest frame is `newest` (unused positions: 0, 0, 0)."""
    past_start = cache.slot_start(0)
    frame_positions = torch.zeros(past_stop - past_start, dtype=torch.long)
    token_index = torch.zeros(past_stop - past_start, dtype=torch.long)
    for frame in cached:
        area = slice(cache.slot_start(frame.slot) - past_start, cache.slot_start(frame.slot) - past_start + frame.tokens.numel())
        frame_positions[area] = rope_position(frame.index, newest, trained)
        token_index[area] = frame.tokens
    return frame_positions, token_index // width, token_index % width


def store_kept_frames(
    cache: StreamCache, cached: list[CachedFrame], new: list[CachedFrame], kept: list[int], chunk_start: int
) -> tuple[StreamCache, tuple[CachedFrame, ...]]:
    """Copy the kept new frames (indices >= len(cached) in kept) from the chunk area, which starts at
    chunk_start, into free slots (those of frames not kept first, lowest first); the cache (grown if a frame
    holds more than a slot) and the kept frames with their slots, in frame order."""
    frames = cached + new
    largest = max([int(frames[i].tokens.numel()) for i in kept if i >= len(cached)], default=0)
    if largest > cache.slot_tokens:
        cache = cache.with_slot_tokens(largest)
    used = {frames[i].slot for i in kept if i < len(cached)}
    free = iter(slot for slot in range(cache.slots) if slot not in used)
    result = []
    for i in kept:
        frame = frames[i]
        if i >= len(cached):
            frame = replace(frame, slot=next(free))
            count = frame.tokens.numel()
            end_of_frame = chunk_start + (i - len(cached) + 1) * cache.frame_tokens  # its region tokens run last
            cache.store(frame.slot, end_of_frame - count, count)
        result.append(frame)
    return cache, tuple(result)
