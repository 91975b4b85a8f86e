"""Streaming generation: within the trained length the stream equals the full-clip output of the 1-step causal
student (dense and sparse, any chunk size); past it the cache is bounded and pose-selected, and RoPE positions
stay in the trained range."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Callable

import numpy as np
import pytest
import torch
from einops import rearrange
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.utils import counters

import iasa.attention.flex as flex
import iasa.video.compiled_blocks as compiled_blocks
from iasa.attention.chunk_layout import chunk_dense_mask
from iasa.attention.config import SparseAttentionConfig
from iasa.attention.flex import build_flex_chunk_plan
from iasa.attention.frame_selection import select_frames
from iasa.attention.layout import SparseLayout
from iasa.video.attention_patch import patch_self_attention
from iasa.video.config import ARCHITECTURES, CLIP_FEATURE_DIM, CLIP_TOKENS, CONDITION_CHANNELS, StreamingConfig
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.pose_guider import PoseGuider
from iasa.video.streaming import (
    LatentFramePose,
    PoseFeatureStream,
    StreamConditions,
    StreamState,
    cached_tokens_of,
    chunk_layout,
    evict_redundant_frame,
    extended_distances,
    frame_noise,
    generate_chunk,
    latent_distances,
    rope_position,
    stream_slot_tokens,
)
from iasa.video.stream_cache import StreamCache

TINY = ARCHITECTURES["tiny"]
LATENT_GRID = (8, 12)  # latent cells -> 4 x 6 tokens per frame
TOKEN_GRID = (4, 6)
TRAINED = 21
TIMESTEP, SIGMA = torch.tensor([1000.0]), 1.0
POINTS = 14  # upper-body points + hand centroids


def random_poses(frames: int, seed: int) -> list[LatentFramePose]:
    """Random keypoints (some hidden) and regions: latent frame 0 covers one video frame, the others four."""
    generator = np.random.default_rng(seed)
    poses = []
    for latent in range(frames):
        video = 1 if latent == 0 else 4
        points = generator.normal(size=(video, POINTS, 2))
        visible = generator.random((video, POINTS)) > 0.2
        regions = torch.from_numpy(generator.integers(0, 5, TOKEN_GRID[0] * TOKEN_GRID[1]) * (generator.random(24) > 0.4))
        poses.append(LatentFramePose(points, visible, regions.long()))
    return poses


def conditions(frames: int, seed: int = 3, device: str = "cpu") -> tuple[StreamConditions, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shared = StreamConditions(
        context=torch.randn(1, TINY.text_length, TINY.text_dim, generator=generator).to(device),
        clip_feature=torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM, generator=generator).to(device),
        y=torch.randn(1, CONDITION_CHANNELS, TRAINED, *LATENT_GRID, generator=generator).to(device),
    )
    pose_features = torch.randn(1, TINY.dim, frames, *TOKEN_GRID, generator=generator).to(device)
    return shared, pose_features


def stream(
    dit, frames: int, chunk: int, rule, poses, config: StreamingConfig | None = None, backend="reference", device="cpu",
    state: StreamState | None = None, compiled: bool = False, after_chunk: Callable[[], None] = lambda: None,
):  # fmt: skip
    """Latents (1, 16, frames, h, w) streamed chunk by chunk, and the states after every chunk (after_chunk is
    called after each)."""
    config = config or StreamingConfig(chunk_latent_frames=chunk)
    shared, features = conditions(frames, device=device)
    state, pieces, states = state or StreamState(), [], []
    for first in range(0, frames, chunk):
        stop = min(first + chunk, frames)
        noise = torch.cat([frame_noise(0, t, LATENT_GRID, torch.device(device), torch.float32) for t in range(first, stop)], 2)
        latents, state = generate_chunk(
            dit, state, noise, TIMESTEP.to(device), SIGMA, shared, features[:, :, first:stop], poses[first:stop], config, rule, backend,
            compiled,
        )
        pieces.append(latents)
        states.append(state)
        after_chunk()
    return torch.cat(pieces, 2), states


def full_clip(dit, frames: int, layout: SparseLayout) -> torch.Tensor:
    shared, features = conditions(frames)
    noise = torch.cat([frame_noise(0, t, LATENT_GRID, torch.device("cpu"), torch.float32) for t in range(frames)], 2)
    flow_conditions = FlowConditions(shared.context, shared.clip_feature, shared.y[:, :, :frames], features)
    with torch.no_grad():
        return noise - SIGMA * predict_flow(dit, noise, TIMESTEP, flow_conditions, layout, "reference")


@pytest.fixture(scope="module")
def student(tiny_dit):
    dit = tiny_dit()
    patch_self_attention(dit)
    return dit


RULE = SparseAttentionConfig(top_k=2, block_size=16)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_sparse_stream_equals_the_full_clip_within_the_trained_length(student, chunk, one_thread):
    poses = random_poses(TRAINED, seed=chunk)
    selection = select_frames(latent_distances(poses, RULE.align_scale), RULE.top_k, "past", True)
    # The rule is not trivial here: frames select some past frames but not all.
    assert 0 < int(selection.sum()) - TRAINED < TRAINED * (TRAINED - 1) // 2
    layout = SparseLayout(selection, torch.stack([p.regions for p in poses]), TOKEN_GRID, RULE.block_size, tuple(RULE.regions))
    expected = full_clip(student, TRAINED, layout)
    streamed, _ = stream(student, TRAINED, chunk, RULE, poses)
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)


def test_sparse_stream_through_flex_equals_the_full_clip(student, one_thread):
    frames = 7
    poses = random_poses(frames, seed=11)
    selection = select_frames(latent_distances(poses, False), RULE.top_k, "past", True)
    layout = SparseLayout(selection, torch.stack([p.regions for p in poses]), TOKEN_GRID, RULE.block_size, tuple(RULE.regions))
    expected = full_clip(student, frames, layout)
    streamed, _ = stream(student, frames, 2, RULE, poses, backend="flex")
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)


def test_dense_stream_equals_the_block_causal_full_clip(student, one_thread):
    """Dense streaming (chunk 1): every cached token is a key. Its full-clip twin is block-causal dense
    attention, the rule with one region covering every token and every past frame selected."""
    poses = random_poses(TRAINED, seed=5)
    causal = torch.ones(TRAINED, TRAINED, dtype=torch.bool).tril()
    everywhere = torch.ones(TRAINED, TOKEN_GRID[0] * TOKEN_GRID[1], dtype=torch.long)
    expected = full_clip(student, TRAINED, SparseLayout(causal, everywhere, TOKEN_GRID))
    streamed, _ = stream(student, TRAINED, 1, None, poses)
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)
    # and the stream is not the bidirectional clip (which sees future frames)
    assert not torch.allclose(streamed, full_clip(student, TRAINED, None), atol=1e-4)


def brute_force_eviction(distance: list[list[float]]) -> int:
    """The eviction rule from its text: among frames 1.., the one whose nearest other frame is nearest; ties:
    the older."""
    best, best_nearest = None, None
    for i in range(1, len(distance)):
        nearest = min(distance[i][j] for j in range(len(distance)) if j != i)
        if best is None or nearest < best_nearest:
            best, best_nearest = i, nearest
    return best


@pytest.mark.parametrize("seed", range(20))
def test_eviction_matches_a_brute_force(seed):
    generator = np.random.default_rng(seed)
    points = generator.normal(size=(int(generator.integers(3, 9)), 2))
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    if seed % 4 == 0:  # exact ties: the older goes
        distance = np.round(distance)
    assert evict_redundant_frame(torch.from_numpy(distance)) == brute_force_eviction(distance.tolist())


def test_bounded_cache_covers_the_pose_space_and_stays_flat(student, one_thread):
    """A long stream alternating between two poses, budget 2: the cache keeps one frame of each pose (not the
    two latest), and its token count is constant once full."""
    generator = np.random.default_rng(0)
    base = [generator.normal(size=(POINTS, 2)) for _ in range(3)]
    frames = 40
    poses = []
    for latent in range(frames):
        video = 1 if latent == 0 else 4
        which = 0 if latent == 0 else 1 + (latent // 3) % 2  # runs of three frames of pose A, then of B
        jitter = generator.normal(scale=1e-3, size=(video, POINTS, 2))
        regions = torch.zeros(24, dtype=torch.long)
        regions[:6] = 1  # 6 region tokens per frame
        poses.append(LatentFramePose(base[which] + jitter, np.ones((video, POINTS), bool), regions))
    config = StreamingConfig(cache_frames=2, trained_latent_frames=8)
    _, states = stream(student, frames, 1, RULE, poses, config)
    for state in states[3:]:
        assert [f.index for f in state.frames][0] == 0
        assert len(state.frames) == 3 and state.cached_tokens == 3 * 6
        kinds = {1 + (f.index // 3) % 2 for f in state.frames[1:]}
        assert kinds == {1, 2}, [f.index for f in state.frames]
    assert len({s.cache_bytes() for s in states[3:]}) == 1
    assert states[-1].layers[0].keys.shape[1] == 18


def fresh_cache_stream(dit, frames: int, rule, poses, config: StreamingConfig) -> tuple[torch.Tensor, list[list[int]]]:
    """The stream recomputed with a new cache for every chunk: the frames the previous chunk kept, written in
    frame order into slots 0, 1, ... from the keys and values recorded when each frame was generated (no slot
    reuse, no eviction in place). Returns the latents and the kept frame indices after every chunk."""
    shared, features = conditions(frames)
    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    kept, pieces, kept_indices = [], [], []
    slot_tokens = stream_slot_tokens(poses, rule)
    dim = dit.blocks[0].self_attn.q.out_features
    for first in range(0, frames, config.chunk_latent_frames):
        stop = min(first + config.chunk_latent_frames, frames)
        cache = StreamCache.allocate(
            len(dit.blocks), 1, dim, config.chunk_latent_frames, 24, config.cache_frames + 1, slot_tokens,
            torch.device("cpu"), torch.float32,
        )  # fmt: skip
        for slot, frame in enumerate(kept):
            keys, values = recorded[frame.index]
            start = cache.slot_start(slot)
            cache.keys[:, :, start : start + keys.shape[2]] = keys
            cache.values[:, :, start : start + keys.shape[2]] = values
        state = StreamState(tuple(replace(f, slot=s) for s, f in enumerate(kept)), cache, first, slot_tokens)
        noise = torch.cat([frame_noise(0, t, LATENT_GRID, torch.device("cpu"), torch.float32) for t in range(first, stop)], 2)
        latents, state = generate_chunk(
            dit, state, noise, TIMESTEP, SIGMA, shared, features[:, :, first:stop], poses[first:stop], config, rule
        )
        for frame in state.frames:
            if frame.index not in recorded:
                start, count = state.cache.slot_start(frame.slot), frame.tokens.numel()
                recorded[frame.index] = tuple(b[:, :, start : start + count].clone() for b in (state.cache.keys, state.cache.values))
        kept = list(state.frames)
        kept_indices.append([f.index for f in kept])
        pieces.append(latents)
    return torch.cat(pieces, 2), kept_indices


@pytest.mark.parametrize("rule", [RULE, None], ids=["sparse", "dense"])
def test_preallocated_cache_past_the_budget_equals_a_fresh_cache_per_chunk(student, rule, one_thread):
    """A stream three times its budget: one buffer for the whole stream (its storage never moves), evicted
    frames overwritten in place, equals the stream recomputed with a new cache per chunk holding the same kept
    frames in frame order."""
    frames = 15
    poses = random_poses(frames, seed=4)
    config = StreamingConfig(chunk_latent_frames=2, cache_frames=3, trained_latent_frames=6)
    hint = StreamState(slot_tokens=stream_slot_tokens(poses, rule))
    latents, states = stream(student, frames, 2, rule, poses, config, state=hint)
    expected, kept_indices = fresh_cache_stream(student, frames, rule, poses, config)
    assert [[f.index for f in s.frames] for s in states] == kept_indices
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-5)
    assert len({s.cache.keys.data_ptr() for s in states}) == 1 and len({s.cache.values.data_ptr() for s in states}) == 1
    # The eviction did reuse slots out of frame order (the case a frame-ordered cache never meets).
    assert any([f.slot for f in s.frames] != sorted(f.slot for f in s.frames) for s in states)
    # Every cached frame holds its region tokens (all of them, dense), region by region.
    for frame in states[-1].frames:
        torch.testing.assert_close(frame.tokens, cached_tokens_of(frame.pose, rule))
        assert (frame.pose.regions[frame.tokens].diff() >= 0).all()
    if rule is not None:
        # Without the slot size up front the first chunk's frames size the slots, and the cache grows (moves)
        # when a larger frame comes: same results.
        grown, grown_states = stream(student, frames, 2, rule, poses, config)
        assert len({s.cache.keys.data_ptr() for s in grown_states}) > 1
        torch.testing.assert_close(grown, latents, rtol=1e-6, atol=1e-6)


def test_flex_chunk_plan_visits_exactly_the_tiles_the_rule_needs(student, one_thread):
    """The block mask of a chunk over a full cache: a tile is visited iff the dense mask has a True in it (with
    queries in the plan's order, keys in buffer order), and marked full iff every pair in it is allowed, so
    padding and unused slots cost no tile."""
    poses = random_poses(9, seed=6)
    config = StreamingConfig(chunk_latent_frames=2, cache_frames=3, trained_latent_frames=6)
    _, states = stream(student, 7, 2, RULE, poses[:7], config, state=StreamState(slot_tokens=stream_slot_tokens(poses, RULE)))
    state = states[-1]
    layout = chunk_layout(list(state.frames), poses[7:9], state.cache, TOKEN_GRID, RULE)
    plan = build_flex_chunk_plan(layout, torch.device("cpu"))
    dense = chunk_dense_mask(layout)[plan.query_permutation]
    size = RULE.block_size
    rows, columns = -(-dense.shape[0] // size), -(-dense.shape[1] // size)
    padded = torch.zeros(rows * size, columns * size, dtype=torch.bool)
    padded[: dense.shape[0], : dense.shape[1]] = dense
    tiles = rearrange(padded, "(qb q) (kb k) -> qb kb (q k)", q=size, k=size)
    inside = torch.zeros_like(padded)
    inside[: dense.shape[0], : dense.shape[1]] = True
    whole = rearrange(inside, "(qb q) (kb k) -> qb kb (q k)", q=size, k=size).all(-1)
    mask = plan.block_mask

    def visited(num, indices):
        result = torch.zeros(rows, columns, dtype=torch.bool)
        for q in range(rows):
            result[q, indices[0, 0, q, : num[0, 0, q]].long()] = True
        return result
    partial = visited(mask.kv_num_blocks, mask.kv_indices)
    full = visited(mask.full_kv_num_blocks, mask.full_kv_indices)
    assert not (partial & full).any()
    assert torch.equal(partial | full, tiles.any(-1))
    assert torch.equal(full, tiles.all(-1) & whole)
    # the case has padding (slots hold fewer tokens than the largest frame's), which the checks above cover
    assert int((layout.key_frames == layout.num_frames).sum()) > 0


@pytest.mark.parametrize("align_scale", [False, True])
def test_extended_distances_equal_the_whole_matrix(align_scale):
    """A chunk computes only its frames' pose distances (rows and columns: with align_scale the distance is not
    symmetric); the result is the whole matrix's, and a stream's state keeps those of its cached frames."""
    poses = random_poses(9, seed=8)
    whole = latent_distances(poses, align_scale)
    assert not torch.allclose(whole, whole.T) or not align_scale
    extended = extended_distances(whole[:6, :6], poses[:6], poses[6:], align_scale)
    torch.testing.assert_close(extended, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(extended_distances(None, [], poses, align_scale), whole, rtol=1e-12, atol=1e-12)


def test_state_distances_are_those_of_the_cached_frames(student, one_thread):
    poses = random_poses(12, seed=9)
    config = StreamingConfig(chunk_latent_frames=2, cache_frames=3, trained_latent_frames=5)
    _, states = stream(student, 12, 2, RULE, poses, config)
    for state in states:
        expected = latent_distances([f.pose for f in state.frames], RULE.align_scale)
        torch.testing.assert_close(state.distances, expected, rtol=1e-12, atol=1e-12)


def test_rope_positions_stay_in_the_trained_range():
    trained = 21
    # within the trained length: the frame's own index (the full clip's positions)
    assert [rope_position(t, 20, trained) for t in range(21)] == list(range(21))
    for newest in range(21, 200):
        positions = [rope_position(t, newest, trained) for t in range(newest + 1)]
        assert positions[0] == 0 and positions[newest] == trained - 1
        assert all(0 <= p <= trained - 1 for p in positions)
        # recent frames keep their true distance to the newest; older ones are clamped to 1
        assert positions[newest - 5] == trained - 6
        assert positions[1] == 1 and positions == sorted(positions)


def test_long_stream_positions_and_conditions_are_in_range(student, one_thread):
    """Past the trained length every chunk still runs (y is read at the remapped positions)."""
    poses = random_poses(12, seed=2)
    config = StreamingConfig(chunk_latent_frames=2, cache_frames=3, trained_latent_frames=5)
    latents, states = stream(student, 12, 2, RULE, poses, config)
    assert latents.shape[2] == 12 and torch.isfinite(latents).all()
    assert all(len(s.frames) <= 4 for s in states)


def test_pose_feature_stream_equals_the_full_clip(one_thread):
    torch.manual_seed(0)
    guider = PoseGuider(dit_dim=8, hidden_channels=4)
    video = torch.rand(1, 3, 4 * 6 + 1, 32, 32)  # 25 frames -> 7 latent frames
    expected = guider.pose_features(video)
    features = PoseFeatureStream(guider)
    got, frame = [], 0
    with torch.no_grad():
        expected = guider.pose_features(video)
        for start in range(0, 25, 3):  # pose frames arrive three at a time
            features.push(video[0, :, start : start + 3].transpose(0, 1))
            if start + 3 >= 25:
                features.finish()
            ready = features.ready_latent_frames()
            # the look-ahead: latent frame t waits for video frame 4 t + 4 (or the end)
            assert ready == (7 if features.finished else max(0, (features.received - 5) // 4 + 1))
            if ready > frame:
                got.append(features.features(frame, ready))
                frame = ready
    torch.testing.assert_close(torch.cat(got, 2), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_flex_stream_on_cuda_equals_the_full_clip(student):
    """The GPU path: compiled FlexAttention with rectangular chunk plans over the preallocated cache (float32: run
    without TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, which turns float32 matmuls into TF32, far from 1e-4)."""
    rule = SparseAttentionConfig(top_k=2, block_size=128)  # the compiled kernel's tile
    poses = random_poses(TRAINED, seed=7)
    selection = select_frames(latent_distances(poses, False), rule.top_k, "past", True)
    layout = SparseLayout(selection, torch.stack([p.regions for p in poses]), TOKEN_GRID, rule.block_size, tuple(rule.regions))
    expected = full_clip(student, TRAINED, layout)
    cuda = copy.deepcopy(student).cuda()
    streamed, _ = stream(cuda, TRAINED, 2, rule, poses, backend="flex", device="cuda")
    torch.testing.assert_close(streamed.cpu(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("rule", "backend"), [(RULE, "reference"), (RULE, "flex"), (None, "reference")], ids=["sparse", "sparse-flex", "dense"])
def test_compiled_stream_past_the_budget_equals_the_eager_stream_with_one_compilation(
    student, rule, backend, counted_compiled_blocks, monkeypatch, one_thread
):  # fmt: skip
    """Compiled chunks (speed.compile_dit) equal the eager ones over a stream five times its cache budget (slots
    reused out of frame order), with one graph of the block function for the whole stream: a sparse stream
    compiles at its first chunk (all 7 whole chunks run compiled), a dense one when its slots are full (chunk 3
    of 7: before, each chunk had more keys, and ran eagerly). The short last chunk (1 frame) runs eagerly: it
    would be a second graph. Nothing compiles after the first compiled chunk. flex runs its compiled kernel, as
    on CUDA (its eager CPU reference cannot run inside the attention op), in both streams; inside the op the
    kernel compiles twice more at the first compiled chunk (its inputs there carry no autograd dispatch keys,
    and a compiled graph's first call runs its custom ops under an aliasing check), then never again."""
    if backend == "flex":
        monkeypatch.setattr(flex, "_run_flex", lambda q, k, v, mask: flex._compiled_flex_attention()(q, k, v, block_mask=mask))
    frames, chunk = 15, 2
    poses = random_poses(frames, seed=12)
    config = StreamingConfig(chunk_latent_frames=chunk, cache_frames=3, trained_latent_frames=6)
    hint = StreamState(slot_tokens=stream_slot_tokens(poses, rule))
    expected, eager_states = stream(student, frames, chunk, rule, poses, config, backend, state=hint)
    assert counted_compiled_blocks == []
    before, compiles = counters["stats"]["unique_graphs"], []  # graphs so far, the flex kernel's included
    got, states = stream(
        student, frames, chunk, rule, poses, config, backend, state=hint, compiled=True,
        after_chunk=lambda: compiles.append(counters["stats"]["unique_graphs"]),
    )  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert [[f.index for f in s.frames] for s in states] == [[f.index for f in s.frames] for s in eager_states]
    assert any([f.slot for f in s.frames] != sorted(f.slot for f in s.frames) for s in states)  # evictions in place
    assert len({s.cache.keys.data_ptr() for s in states}) == 1
    first_compiled = 0 if rule is not None else 2
    assert len(counted_compiled_blocks) == (7 - first_compiled) * len(student.blocks)
    assert len(_debug_get_cache_entry_list(compiled_blocks.run_block.__code__)) == 1 and not counters["graph_break"]
    kernel_compiles = 2 if backend == "flex" else 0
    assert compiles == [before] * first_compiled + [before + 1 + kernel_compiles] * (8 - first_compiled)
    assert sum(counters["recompiles"].values()) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_flex_stream_on_cuda_equals_eager_and_the_full_clip(student, counted_compiled_blocks):
    """The GPU path with speed.compile_dit: compiled blocks (Inductor) around the compiled flex kernel, 128-token
    blocks (the compiled kernel's tile; 16 fail its lowering on H100/H200), float32 (run without
    TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1). Within the trained length the compiled stream equals the eager CUDA
    stream and the CPU full clip; past its cache budget it equals the eager CUDA stream. One block graph per
    stream geometry (two here: two cache capacities), none compiled after a stream's first chunk."""
    rule = SparseAttentionConfig(top_k=2, block_size=128)
    cuda = copy.deepcopy(student).cuda()
    poses = random_poses(TRAINED, seed=7)
    selection = select_frames(latent_distances(poses, False), rule.top_k, "past", True)
    layout = SparseLayout(selection, torch.stack([p.regions for p in poses]), TOKEN_GRID, rule.block_size, tuple(rule.regions))
    full = full_clip(student, TRAINED, layout)
    bounded = StreamingConfig(chunk_latent_frames=2, cache_frames=3, trained_latent_frames=6)
    for frames, config in ((TRAINED, None), (15, bounded)):
        hint = StreamState(slot_tokens=stream_slot_tokens(poses[:frames], rule))
        eager, _ = stream(cuda, frames, 2, rule, poses[:frames], config, "flex", "cuda", state=hint)
        graphs = []
        compiled, _ = stream(
            cuda, frames, 2, rule, poses[:frames], config, "flex", "cuda", state=hint, compiled=True,
            after_chunk=lambda: graphs.append(counters["stats"]["unique_graphs"]),
        )  # fmt: skip
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
        if config is None:
            torch.testing.assert_close(compiled.cpu(), full, rtol=1e-4, atol=1e-4)
        assert len(set(graphs)) == 1, graphs
    assert len(counted_compiled_blocks) == (10 + 7) * len(student.blocks)
    assert len(_debug_get_cache_entry_list(compiled_blocks.run_block.__code__)) == 2
