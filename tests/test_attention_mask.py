"""The combined rule, its block layout and the attention kernels against brute-force references."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iasa.attention import (
    SparseAttentionConfig,
    SparseLayout,
    block_layout,
    build_sparse_layout,
    dense_mask,
    density_statistics,
    frame_region_order,
    inverse_permutation,
    sparse_attention,
)
from iasa.attention import masks
from iasa.attention.fast import fast_sparse_attention
from iasa.attention.flex import cached_flex_plan
from iasa.attention.layout import BACKGROUND
from iasa.pose.synthetic_speaker import synthetic_speaker


@st.composite
def layouts(draw, max_frames=5, max_side=4):
    frames = draw(st.integers(1, max_frames))
    grid = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    seed = draw(st.integers(0, 2**31))
    generator = torch.Generator().manual_seed(seed)
    selection = torch.rand(frames, frames, generator=generator) < 0.5
    selection |= torch.eye(frames, dtype=torch.bool)
    regions = torch.randint(0, 4, (frames, grid[0] * grid[1]), generator=generator)
    block_size = draw(st.sampled_from([1, 3, 4, 8, 16]))
    return SparseLayout(selection, regions, grid, block_size=block_size, region_names=("a", "b", "c"))


@settings(max_examples=40, deadline=None)
@given(layout=layouts())
def test_dense_mask_equals_brute_force(layout, brute_force_allowed):
    expected = brute_force_allowed(layout.frame_selection, layout.token_regions)
    assert torch.equal(dense_mask(layout), expected)


def test_dense_mask_of_a_real_layout_equals_brute_force(brute_force_allowed):
    keypoints = synthetic_speaker(17, (64, 96), seed=2)
    layout = build_sparse_layout(keypoints, SparseAttentionConfig(top_k=2))
    expected = brute_force_allowed(layout.frame_selection, layout.token_regions)
    assert torch.equal(dense_mask(layout), expected)


@settings(max_examples=20, deadline=None)
@given(top_k=st.integers(0, 6), direction=st.sampled_from(["past", "both"]), seed=st.integers(0, 50))
def test_rule_properties_on_real_layouts(top_k, direction, seed):
    keypoints = synthetic_speaker(25, (64, 64), seed=seed)
    layout = build_sparse_layout(keypoints, SparseAttentionConfig(top_k=top_k, direction=direction))
    mask = dense_mask(layout)
    frames, tokens = layout.token_regions.shape
    token_frame = torch.arange(frames).repeat_interleave(tokens)
    region = layout.token_regions.reshape(-1)
    same_frame = token_frame[:, None] == token_frame[None, :]
    assert mask[same_frame].all()  # dense within the own frame
    background = region == 0
    assert not (mask & ~same_frame)[background].any() and not (mask & ~same_frame)[:, background].any()
    if direction == "past":
        assert not (mask & (token_frame[None, :] > token_frame[:, None])).any()  # no future frame


@settings(max_examples=40, deadline=None)
@given(layout=layouts())
def test_block_layout_covers_exactly_the_dense_mask_after_permutation(layout):
    permutation = frame_region_order(layout)
    inverse = inverse_permutation(permutation)
    assert torch.equal(permutation[inverse], torch.arange(layout.num_tokens))  # round trip
    assert torch.equal(inverse[permutation], torch.arange(layout.num_tokens))
    mask = dense_mask(layout)[permutation][:, permutation]
    blocks = block_layout(layout, permutation=permutation)
    size = layout.block_size
    for qb in range(blocks.pair_counts.shape[0]):
        for kb in range(blocks.pair_counts.shape[1]):
            tile = mask[qb * size : (qb + 1) * size, kb * size : (kb + 1) * size]
            assert blocks.pair_counts[qb, kb] == tile.sum()
            assert bool(blocks.full[qb, kb]) == bool(tile.all())
            assert bool(blocks.nonempty[qb, kb]) == bool(tile.any())


def test_reordering_groups_frames_then_regions():
    regions = torch.tensor([[2, 0, 1, 2], [1, 1, 0, 2]])
    layout = SparseLayout(torch.eye(2, dtype=torch.bool), regions, (2, 2))
    assert frame_region_order(layout).tolist() == [1, 2, 0, 3, 6, 4, 5, 7]


def test_density_statistics_match_the_dense_mask():
    keypoints = synthetic_speaker(17, (64, 96), seed=3)
    layout = build_sparse_layout(keypoints, SparseAttentionConfig(top_k=2, block_size=8))
    statistics = density_statistics(layout)
    mask = dense_mask(layout)
    assert statistics["token_density"] == pytest.approx(mask.float().mean().item())
    tiles = mask.reshape(layout.num_tokens // 8, 8, layout.num_tokens // 8, 8).any(-1).any(1)
    assert statistics["block_density"] == pytest.approx(tiles.float().mean().item())
    assert statistics["reordered_full_block_fraction"] >= statistics["full_block_fraction"]


def small_layout(seed=0, top_k=2, block_size=16):
    keypoints = synthetic_speaker(13, (64, 80), seed=seed)
    return build_sparse_layout(keypoints, SparseAttentionConfig(top_k=top_k, block_size=block_size, direction="both"))


def test_reference_equals_brute_force_masked_softmax(brute_force_attention):
    layout = small_layout()
    query, key, value = torch.randn(3, 2, 3, layout.num_tokens, 8).unbind(0)
    output = sparse_attention(query, key, value, layout, backend="reference")
    expected = brute_force_attention(query, key, value, dense_mask(layout))
    assert torch.allclose(output.double(), expected, atol=1e-5)


def test_reference_backward_equals_brute_force(brute_force_attention):
    layout = small_layout(seed=1)
    inputs = [x.requires_grad_() for x in torch.randn(3, 1, 2, layout.num_tokens, 8, dtype=torch.float64).unbind(0)]
    weights = torch.randn(1, 2, layout.num_tokens, 8, dtype=torch.float64)
    grads = torch.autograd.grad((sparse_attention(*inputs, layout) * weights).sum(), inputs)
    expected = torch.autograd.grad((brute_force_attention(*inputs, dense_mask(layout)) * weights).sum(), inputs)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("block_size", [16, 128])
def test_flex_forward_on_cpu_equals_reference(block_size):
    layout = small_layout(seed=2, block_size=block_size)
    query, key, value = torch.randn(3, 1, 2, layout.num_tokens, 16).unbind(0)
    flex = sparse_attention(query, key, value, layout, backend="flex")
    reference = sparse_attention(query, key, value, layout, backend="reference")
    assert torch.allclose(flex, reference, atol=1e-5)


def test_flex_block_mask_tiles_reproduce_the_dense_mask():
    """What the GPU kernel computes: full tiles all allowed, partial tiles the mask_mod, the rest none."""
    layout = small_layout(seed=3, block_size=16)
    plan = cached_flex_plan(layout, torch.device("cpu"))
    block_mask = plan.block_mask
    size, tokens = layout.block_size, layout.num_tokens
    index = torch.arange(tokens)
    zero = torch.zeros((), dtype=torch.long)
    mask_mod_values = block_mask.mask_mod(zero, zero, index[:, None], index[None, :])
    emulated = torch.zeros(tokens, tokens, dtype=torch.bool)
    for qb in range(block_mask.kv_num_blocks.shape[-1]):
        rows = slice(qb * size, (qb + 1) * size)
        for kb in block_mask.full_kv_indices[0, 0, qb, : block_mask.full_kv_num_blocks[0, 0, qb]].tolist():
            emulated[rows, kb * size : (kb + 1) * size] = True
        for kb in block_mask.kv_indices[0, 0, qb, : block_mask.kv_num_blocks[0, 0, qb]].tolist():
            columns = slice(kb * size, (kb + 1) * size)
            emulated[rows, columns] = mask_mod_values[rows, columns]
    expected = dense_mask(layout)[plan.permutation][:, plan.permutation]
    assert torch.equal(emulated, expected)


def test_flex_on_cpu_refuses_gradients_with_a_clear_error():
    layout = small_layout()
    query = torch.randn(1, 1, layout.num_tokens, 8, requires_grad=True)
    with pytest.raises(NotImplementedError, match="reference"):
        sparse_attention(query, query, query, layout, backend="flex")


def test_bad_shapes_and_backends_are_errors():
    layout = small_layout()
    query = torch.randn(1, 1, layout.num_tokens + 1, 8)
    with pytest.raises(ValueError, match="covers"):
        sparse_attention(query, query, query, layout)
    query = torch.randn(1, 1, layout.num_tokens, 8)
    with pytest.raises(ValueError, match="unknown attention backend"):
        sparse_attention(query, query, query, layout, backend="magic")


def test_moving_a_layout_keeps_every_field():
    layout = small_layout(block_size=32)
    moved = layout.to("meta")
    assert moved.token_regions.device.type == "meta" and moved.frame_selection.device.type == "meta"
    assert (moved.grid_size, moved.block_size, moved.region_names) == (layout.grid_size, 32, layout.region_names)


def test_a_new_rule_is_one_change(monkeypatch, brute_force_allowed, brute_force_attention):
    """Every backend reads the rule from masks.allowed: a variant in which background tokens also see all
    of latent frame 0 (a reference-image sink) reaches the dense mask, the block layout, FlexAttention
    and the fast path's plan and CPU kernels without any other change."""
    paper_rule = masks.allowed

    def background_sees_frame_zero(frame_q, region_q, frame_k, region_k, frame_selection):
        sink = (region_q == BACKGROUND) & (frame_k == 0)
        return paper_rule(frame_q, region_q, frame_k, region_k, frame_selection) | sink

    monkeypatch.setattr(masks, "allowed", background_sees_frame_zero)
    generator = torch.Generator().manual_seed(4)
    selection = (torch.rand(4, 4, generator=generator) < 0.5) | torch.eye(4, dtype=torch.bool)
    regions = torch.randint(0, 3, (4, 12), generator=generator)
    layout = SparseLayout(selection, regions, (3, 4), block_size=8, region_names=("a", "b"))
    paper = brute_force_allowed(selection, regions)
    token_frame = torch.arange(4).repeat_interleave(12)
    expected = paper | ((regions.reshape(-1) == 0)[:, None] & (token_frame == 0)[None, :])
    assert not torch.equal(expected, paper)
    assert torch.equal(dense_mask(layout), expected)

    permutation = frame_region_order(layout)
    counts = block_layout(layout, permutation=permutation).pair_counts
    reordered = expected[permutation][:, permutation].reshape(6, 8, 6, 8)
    assert torch.equal(counts, reordered.sum((1, 3)))

    query, key, value = torch.randn(3, 1, 2, layout.num_tokens, 8, dtype=torch.float64).unbind(0)
    want = brute_force_attention(query, key, value, expected)
    assert torch.allclose(sparse_attention(query, key, value, layout, backend="reference"), want, atol=1e-10)
    assert torch.allclose(sparse_attention(query, key, value, layout, backend="flex"), want, atol=1e-10)
    inputs = [x.clone().requires_grad_() for x in (query, key, value)]
    fast = fast_sparse_attention(*inputs, layout)
    assert torch.allclose(fast, want, atol=1e-10)
    reference_inputs = [x.clone().requires_grad_() for x in (query, key, value)]
    reference_grads = torch.autograd.grad(brute_force_attention(*reference_inputs, expected).sum(), reference_inputs)
    for got, wanted in zip(torch.autograd.grad(fast.sum(), inputs), reference_grads):
        assert torch.allclose(got, wanted, atol=1e-10)


def test_fast_path_refuses_a_rule_that_is_not_dense_within_a_frame(monkeypatch):
    """The fast path runs each frame as dense attention; a rule hiding pairs inside a frame is an error."""
    monkeypatch.setattr(masks, "allowed", lambda frame_q, region_q, frame_k, region_k, selection: region_q == region_k)
    layout = SparseLayout(torch.eye(2, dtype=torch.bool), torch.tensor([[0, 1], [1, 1]]), (1, 2))
    query = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="dense attention"):
        fast_sparse_attention(query, query, query, layout)
