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
  cached (background never crosses frames), so memory is constant over a stream of any length.
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

from iasa.attention.chunk_layout import ChunkLayout
from iasa.attention.config import SparseAttentionConfig
from iasa.attention.frame_selection import select_frames
from iasa.attention.layout import BACKGROUND
from iasa.attention.pose_distance import pairwise_pose_distance, upper_body_points
from iasa.attention.regions import label_tokens, region_token_masks
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.video.attention_patch import LayerKeyValues
from iasa.video.config import LATENT_CHANNELS, StreamingConfig
from iasa.video.denoiser import FlowConditions, predict_flow_streamed, rope_at
from iasa.video.latent_grid import TEMPORAL_STRIDE, latent_frame_groups
from iasa.video.pose_guider import LEADING_POSE_REPEATS, PoseGuider

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


def latent_distances(poses: list[LatentFramePose], align_scale: bool) -> torch.Tensor:
    """(T, T) float64 pose distance between latent frames: the mean over the comparable pairs of their video
    frames (iasa.attention.pose_distance.latent_pose_distance), +inf where none is comparable."""
    points = np.concatenate([pose.points for pose in poses])
    visible = np.concatenate([pose.visible for pose in poses])
    video = np.asarray(pairwise_pose_distance(points, visible, points, visible, align_scale))
    membership = np.zeros((len(poses), len(points)))
    start = 0
    for latent, pose in enumerate(poses):
        membership[latent, start : start + len(pose.points)] = 1.0
        start += len(pose.points)
    comparable = np.isfinite(video)
    total = membership @ np.where(comparable, video, 0.0) @ membership.T
    count = membership @ comparable.astype(np.float64) @ membership.T
    return torch.from_numpy(np.divide(total, count, out=np.full_like(total, np.inf), where=count > 0))


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
    """A latent frame in the cache: its index, pose, and which of its tokens (positions in (h w) order) the
    cache holds."""

    index: int
    pose: LatentFramePose
    tokens: torch.Tensor


@dataclass(frozen=True, eq=False)
class StreamState:
    """A stream after the frames generated so far: the cached frames in frame order (frame 0 first), per DiT
    layer the keys and values of their tokens (concatenated in the same order; None before the first chunk),
    and the next latent frame's index."""

    frames: tuple[CachedFrame, ...] = ()
    layers: tuple[LayerKeyValues, ...] | None = None
    next_frame: int = 0

    @property
    def cached_tokens(self) -> int:
        return sum(int(frame.tokens.numel()) for frame in self.frames)

    def cache_bytes(self) -> int:
        if self.layers is None:
            return 0
        return sum(t.numel() * t.element_size() for layer in self.layers for t in (layer.keys, layer.values))


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


def frames_to_keep(frames: list[CachedFrame], cache_frames: int, align_scale: bool) -> list[int]:
    """Indices (into frames) of the frames the cache keeps: all while within frame 0 + cache_frames, else
    evicting one redundant frame at a time."""
    kept = list(range(len(frames)))
    while len(kept) > cache_frames + 1:
        distance = latent_distances([frames[i].pose for i in kept], align_scale)
        del kept[evict_redundant_frame(distance)]
    return kept


def _take_tokens(layer: LayerKeyValues, index: torch.Tensor) -> LayerKeyValues:
    return LayerKeyValues(layer.keys.index_select(1, index), layer.values.index_select(1, index))


# ---------------------------------------------------------------------------------------------- one chunk
@dataclass(frozen=True, eq=False)
class StreamConditions:
    """What every chunk of a stream shares: context (1, L, text_dim), clip_feature (1, 257, 1280), y (1, 20,
    T, h, w) for the trained length T with the reference-pose embedding added."""

    context: torch.Tensor
    clip_feature: torch.Tensor
    y: torch.Tensor


def chunk_layout(
    keys: list[CachedFrame],
    chunk: list[LatentFramePose],
    grid: tuple[int, int],
    rule: SparseAttentionConfig,
    key_frame_capacity: int | None = None,
) -> ChunkLayout:
    """The chunk's layout: key frames are the cached ones then the chunk's, selected by the rule's "past"
    top-K (select_frames on their pose distances: key order is frame order, so "earlier" is "before").
    key_frame_capacity: the most key frames any chunk of the stream has (the kernels' static padding)."""
    poses = [frame.pose for frame in keys] + chunk
    selection = select_frames(latent_distances(poses, rule.align_scale), rule.top_k, "past", rule.keep_first_frame)
    key_frames = [torch.full((frame.tokens.numel(),), i, dtype=torch.long) for i, frame in enumerate(keys)]
    key_regions = [frame.pose.regions[frame.tokens] for frame in keys]
    tokens = grid[0] * grid[1]
    for offset, pose in enumerate(chunk):
        key_frames.append(torch.full((tokens,), len(keys) + offset, dtype=torch.long))
        key_regions.append(pose.regions)
    return ChunkLayout(
        frame_selection=selection,
        query_regions=torch.stack([pose.regions for pose in chunk]),
        key_frames=torch.cat(key_frames),
        key_regions=torch.cat(key_regions).long(),
        grid_size=grid,
        block_size=rule.block_size,
        region_names=tuple(rule.regions),
        key_capacity=None if key_frame_capacity is None else (key_frame_capacity, key_frame_capacity * tokens),
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
) -> tuple[torch.Tensor, StreamState]:
    """The next C latent frames of a stream, clean latents (1, 16, C, h, w), and the state after them.

    noise (1, 16, C, h, w): their starting noise; timestep (1,), sigma: the student's one step; pose_features
    (1, dim, C, h/2, w/2) (PoseFeatureStream) or None; poses: the C frames' LatentFramePose; rule: the sparse
    layout rule (None = dense: every cached token and the whole chunk). The DiT must be patched."""
    chunk = noise.shape[2]
    if len(poses) != chunk:
        raise ValueError(f"a chunk of {chunk} latent frames needs {chunk} frame poses, got {len(poses)}")
    first = state.next_frame
    newest = first + chunk - 1
    trained = config.trained_latent_frames
    grid = (noise.shape[3] // 2, noise.shape[4] // 2)
    positions = torch.tensor([rope_position(first + i, newest, trained) for i in range(chunk)])
    past_rope = None
    if state.frames:
        frame_positions = torch.cat(
            [torch.full((f.tokens.numel(),), rope_position(f.index, newest, trained)) for f in state.frames]
        )
        tokens = torch.cat([f.tokens for f in state.frames])
        past_rope = rope_at(dit, frame_positions, tokens // grid[1], tokens % grid[1], noise.device)
    # Every chunk of the stream pads its keys to the same capacity: one compiled kernel for the stream.
    capacity = config.cache_frames + 1 + config.chunk_latent_frames
    layout = None if rule is None else chunk_layout(list(state.frames), poses, grid, rule, capacity).to(noise.device)
    flow_conditions = FlowConditions(
        conditions.context, conditions.clip_feature, conditions.y[:, :, positions.to(conditions.y.device)], pose_features
    )
    flow, chunk_layers = predict_flow_streamed(
        dit, noise, timestep, flow_conditions, positions, state.layers, past_rope, layout, backend
    )
    latents = noise - flow * sigma

    # Cache the chunk: under the sparse rule only its region tokens (background never crosses frames).
    new_frames, index = [], []
    for offset, pose in enumerate(poses):
        kept = torch.arange(pose.regions.numel()) if rule is None else torch.nonzero(pose.regions != BACKGROUND)[:, 0]
        new_frames.append(CachedFrame(first + offset, pose, kept))
        index.append(kept + offset * pose.regions.numel())
    index = torch.cat(index).to(noise.device)
    new_layers = [_take_tokens(layer, index) for layer in chunk_layers]
    frames = list(state.frames) + new_frames
    layers = new_layers if state.layers is None else [
        LayerKeyValues(torch.cat([old.keys, new.keys], 1), torch.cat([old.values, new.values], 1))
        for old, new in zip(state.layers, new_layers)
    ]  # fmt: skip
    kept = frames_to_keep(frames, config.cache_frames, rule.align_scale if rule is not None else False)
    if len(kept) < len(frames):
        starts = np.cumsum([0] + [f.tokens.numel() for f in frames])
        token_index = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in kept]).to(noise.device)
        layers = [_take_tokens(layer, token_index) for layer in layers]
        frames = [frames[i] for i in kept]
    return latents, replace(state, frames=tuple(frames), layers=tuple(layers), next_frame=newest + 1)
