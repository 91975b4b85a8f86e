"""The fast sparse-attention path against a brute-force per-token implementation of the rule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from einops import rearrange

from iasa.attention.fast import fast_sparse_attention, forward_parts, prepare_fast_layout
from iasa.attention.fast_plan import build_cross_region_plan
from iasa.attention.layout import SparseLayout

REPO = Path(__file__).resolve().parents[1]


def random_layout(seed: int, frames: int = 4, grid: tuple[int, int] = (3, 4), regions: int = 3) -> SparseLayout:
    """Random frame selection (some frames choose nothing but themselves) and random region labels
    (some regions missing from some frames, one frame all background)."""
    generator = torch.Generator().manual_seed(seed)
    selection = torch.rand(frames, frames, generator=generator) < 0.5
    selection[0] = False  # frame 0 sees only itself
    selection.fill_diagonal_(True)
    labels = torch.randint(0, regions + 1, (frames, grid[0] * grid[1]), generator=generator)
    labels[1] = 0  # an all-background frame
    labels[2][labels[2] == 1] = 0  # region 1 absent from frame 2
    return SparseLayout(selection, labels, grid)


def qkv(shape, dtype=torch.float64, seed=0, device="cpu"):
    generator = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=dtype, device=device).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_and_backward_match_brute_force_float64(seed, brute_force_allowed, brute_force_attention):
    layout = random_layout(seed)
    allowed = brute_force_allowed(layout.frame_selection, layout.token_regions)
    q, k, v = qkv((2, 3, layout.num_tokens, 64), seed=seed)
    grad = torch.randn(2, 3, layout.num_tokens, 64, dtype=torch.float64)

    expected = brute_force_attention(q, k, v, allowed)
    actual = fast_sparse_attention(q, k, v, layout)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)

    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    actual_grads = torch.autograd.grad(actual, (q, k, v), grad)
    for name, a, e in zip("qkv", actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


def test_float32_and_token_major_inputs(brute_force_allowed, brute_force_attention):
    """(batch, tokens, heads, d) memory seen as (batch, heads, tokens, d), as Wan hands it over."""
    layout = random_layout(3, frames=5, grid=(4, 4), regions=4)
    allowed = brute_force_allowed(layout.frame_selection, layout.token_regions)
    generator = torch.Generator().manual_seed(3)
    base = [torch.randn(2, layout.num_tokens, 2, 64, generator=generator) for _ in range(3)]
    q, k, v = [x.transpose(1, 2).requires_grad_() for x in base]
    out = fast_sparse_attention(q, k, v, layout)
    expected = brute_force_attention(q, k, v, allowed)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for a, e in zip(grads, expected_grads):
        torch.testing.assert_close(a.double(), e.double(), rtol=1e-4, atol=1e-4)


def test_single_batch_mixed_strides_and_custom_scale(brute_force_allowed):
    layout = random_layout(4)
    allowed = brute_force_allowed(layout.frame_selection, layout.token_regions)
    q, k, v = qkv((1, 2, layout.num_tokens, 64), seed=4)
    k_strided = k.detach().transpose(1, 2).contiguous().transpose(1, 2)
    out = fast_sparse_attention(q, k_strided, v, layout, scale=0.3)
    scores = (q @ k.transpose(-1, -2)) * 0.3
    expected = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_forward_parts_are_the_own_frame_softmax_and_then_the_whole_rule(brute_force_allowed, brute_force_attention):
    """The profiling split: part A alone is attention within each frame; part B merged into it is the rule."""
    layout = random_layout(6)
    q, k, v = [x.detach() for x in qkv((1, 2, layout.num_tokens, 64), seed=6)]
    parts = forward_parts(q, k, v, layout)
    frame = torch.arange(layout.num_tokens) // layout.tokens_per_frame
    own = rearrange(parts["own_frame"](), "(b t) h n d -> b h (t n) d", b=1)  # batch 1: (batch * T, heads, N, d)
    own_expected = brute_force_attention(q, k, v, frame[:, None] == frame[None, :])
    torch.testing.assert_close(own, own_expected, rtol=1e-10, atol=1e-10)
    whole_expected = brute_force_attention(q, k, v, brute_force_allowed(layout.frame_selection, layout.token_regions))
    torch.testing.assert_close(parts["cross_region"](), whole_expected, rtol=1e-10, atol=1e-10)


def test_all_background_is_attention_within_frames():
    frames, grid = 3, (2, 5)
    layout = SparseLayout(torch.ones(frames, frames, dtype=torch.bool), torch.zeros(frames, 10, dtype=torch.long), grid)
    q, k, v = qkv((1, 2, 30, 64), seed=5)
    out = fast_sparse_attention(q, k, v, layout)
    per_frame = torch.nn.functional.scaled_dot_product_attention(
        *[x.unflatten(2, (frames, 10)).transpose(1, 2) for x in (q, k, v)]
    ).transpose(1, 2).flatten(2, 3)
    torch.testing.assert_close(out, per_frame, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 5])
def test_plan_lists_exactly_the_cross_frame_pairs(seed, brute_force_allowed):
    layout = random_layout(seed, frames=5, grid=(3, 3))
    plan = build_cross_region_plan(layout, "cpu", forward_tile_tokens=(3, 2), backward_tile_tokens=2)
    allowed = brute_force_allowed(layout.frame_selection, layout.token_regions)
    frame_of = torch.arange(layout.num_tokens) // layout.tokens_per_frame
    cross = allowed & (frame_of[:, None] != frame_of[None, :])
    assert plan.cross_pairs == int(cross.sum())

    # Expand the tables back into token pairs and compare with the brute force.
    token = plan.token_index32.long()
    assert torch.equal(token, plan.token_frame * layout.tokens_per_frame + plan.token_position)
    segment_of_row = list(zip(plan.token_frame.tolist(), layout.token_regions[plan.token_frame, plan.token_position].tolist()))
    key_counts = (plan.key_list_ptr[1:] - plan.key_list_ptr[:-1]).tolist()
    rows_with_keys = [r for r in range(plan.num_region_tokens) if cross[token[r]].any()]
    for tilings, expected_rows in (
        (plan.forward_tilings, rows_with_keys),  # the forward skips rows without cross keys
        ((plan.backward_tiling,), list(range(plan.num_region_tokens))),
    ):
        covered = []
        for tiling in tilings:
            sizes = tiling.end - tiling.start
            assert int(sizes.min()) > 0 and int(sizes.max()) <= tiling.tokens
            for a, b in zip(tiling.start.tolist(), tiling.end.tolist()):
                assert len(set(segment_of_row[a:b])) == 1  # a tile never spans two (frame, region) segments
                covered.extend(range(a, b))
        assert sorted(covered) == expected_rows  # every row once
    for tiling in plan.forward_tilings:  # longest key lists first
        counts = [key_counts[s] for s in tiling.segment.tolist()]
        assert counts == sorted(counts, reverse=True)
    listed = torch.zeros_like(cross)
    listed_from_keys = torch.zeros_like(cross)
    tiling = plan.backward_tiling
    for tile in range(tiling.count):
        rows = range(int(tiling.start[tile]), int(tiling.end[tile]))
        segment = int(tiling.segment[tile])
        keys = plan.key_list_token[plan.key_list_ptr[segment] : plan.key_list_ptr[segment + 1]].long()
        queries = plan.query_list_token[plan.query_list_ptr[segment] : plan.query_list_ptr[segment + 1]].long()
        query_rows = plan.query_list[plan.query_list_ptr[segment] : plan.query_list_ptr[segment + 1]].long()
        assert torch.equal(token[query_rows], queries)
        for r in rows:
            assert not listed[token[r], keys].any()  # every key once
            listed[token[r], keys] = True
            listed_from_keys[queries, token[r]] = True
    assert torch.equal(listed, cross)
    # The query lists name the same pairs, seen from the keys.
    assert torch.equal(listed_from_keys, cross)


def test_forward_tiles_cut_segments_into_large_tiles_and_a_small_remainder():
    # One frame pair sharing one region: frame 1 (sees frame 0) has 300 region tokens, frame 0 sees nothing.
    labels = torch.zeros(2, 400, dtype=torch.long)
    labels[:, :300] = 1
    selection = torch.tensor([[True, False], [True, True]])
    plan = build_cross_region_plan(SparseLayout(selection, labels, (20, 20)), "cpu", forward_tile_tokens=(64, 128))
    large, small = plan.forward_tilings
    assert (large.tokens, small.tokens) == (128, 64)
    # Frame 1's segment is rows 300..599: two 128-row tiles and a 44-row remainder in a 64-row tile.
    assert large.start.tolist() == [300, 428] and large.end.tolist() == [428, 556]
    assert small.start.tolist() == [556] and small.end.tolist() == [600]
    # A remainder longer than the small tile takes a large one.
    labels[:, :200] = 1
    labels[:, 200:] = 0
    large, small = build_cross_region_plan(SparseLayout(selection, labels, (20, 20)), "cpu").forward_tilings
    assert (large.end - large.start).tolist() == [128, 72] and small.count == 0


def test_plan_is_cached_per_layout_object():
    layout = random_layout(0)
    assert prepare_fast_layout(layout, "cpu") is prepare_fast_layout(layout, "cpu")
    same_values = SparseLayout(layout.frame_selection.clone(), layout.token_regions.clone(), layout.grid_size)
    assert prepare_fast_layout(same_values, "cpu") is not prepare_fast_layout(layout, "cpu")


def test_wrong_token_count_is_a_clear_error():
    layout = random_layout(0)
    q, k, v = qkv((1, 1, layout.num_tokens + 1, 64))
    with pytest.raises(ValueError, match="layout describes"):
        fast_sparse_attention(q, k, v, layout)


TRITON_CHECK = """
import torch
from iasa.attention import fast_math, fast_triton
from iasa.attention.fast_plan import build_cross_region_plan
from tests.test_attention_fast import random_layout

layout = random_layout(7, frames=4, grid=(6, 6), regions=2)
plan = build_cross_region_plan(layout, "cpu", forward_tile_tokens=(32, 16), backward_tile_tokens=16)
frames, per_frame = layout.token_regions.shape
batch, heads, dim = 2, 2, 64
g = torch.Generator().manual_seed(0)
q, k, v = [torch.randn(batch, frames * per_frame, heads, dim, generator=g).half().transpose(1, 2) for _ in range(3)]
own_out = torch.randn(batch, frames, heads, per_frame, dim, generator=g).half()
own_lse = torch.randn(batch, frames, heads, per_frame, generator=g)
math_out, math_lse = own_out.float(), own_lse.clone()
fast_math.cross_region_forward_merge(
    q.float(), k.float(), v.float(), math_out.movedim(1, 2), math_lse.movedim(1, 2), plan, 0.125)
# Key tiles of 16 so that lists span several full tiles and a partial one.
fast_triton.FORWARD_LAUNCH = {key: (16, 4, 2) for key in fast_triton.FORWARD_LAUNCH}
fast_out, fast_lse = own_out.clone(), own_lse.clone()
fast_triton.cross_region_forward_merge(q, k, v, fast_out.movedim(1, 2), fast_lse.movedim(1, 2), plan, 0.125)
assert not torch.equal(fast_out, own_out)
torch.testing.assert_close(fast_out.float(), math_out, rtol=0, atol=2e-3)
torch.testing.assert_close(fast_lse, math_lse, rtol=0, atol=1e-5)

grad_out = torch.randn(batch, heads, frames * per_frame, dim, generator=g).half()
own_grads = [torch.randn(batch, frames, heads, per_frame, dim, generator=g).half() for _ in range(3)]
fast_grads = [x.clone() for x in own_grads]
math_grads = [x.float() for x in own_grads]
fast_triton.cross_region_backward_accumulate(
    grad_out, q, k, v, fast_out.movedim(1, 2), fast_lse.movedim(1, 2),
    tuple(x.movedim(1, 2) for x in fast_grads), plan, 0.125)
fast_math.cross_region_backward_accumulate(
    grad_out.float(), q.float(), k.float(), v.float(), fast_out.float().movedim(1, 2), fast_lse.movedim(1, 2),
    tuple(x.movedim(1, 2) for x in math_grads), plan, 0.125)
for fast, math, own in zip(fast_grads, math_grads, own_grads):
    assert not torch.equal(fast, own)
    torch.testing.assert_close(fast.float(), math, rtol=0, atol=4e-3)
print("ok")
"""


def test_triton_kernels_match_plain_pytorch_in_the_interpreter():
    """The CUDA kernels' logic, run by Triton's CPU interpreter on a small strided case."""
    pytest.importorskip("triton")
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRITON_CHECK)],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("token_major", [False, True])
def test_gpu_kernels_match_brute_force(dtype, head_dim, token_major, brute_force_attention):
    frames, grid = 5, (16, 24)
    generator = torch.Generator().manual_seed(11)
    selection = torch.rand(frames, frames, generator=generator) < 0.6
    selection.fill_diagonal_(True)
    labels = torch.randint(0, 4, (frames, 1, 4, 6), generator=generator)
    labels = labels.repeat_interleave(4, 2).repeat_interleave(4, 3).reshape(frames, -1)  # blobs of 4x4 tokens
    layout = SparseLayout(selection, labels, grid)
    tokens = layout.num_tokens
    frame_of = torch.arange(tokens) // layout.tokens_per_frame
    region = labels.reshape(-1)
    allowed = (frame_of[:, None] == frame_of[None, :]) | (
        selection[frame_of[:, None], frame_of[None, :]] & (region[:, None] == region[None, :]) & (region[:, None] != 0)
    )
    allowed = allowed.cuda()
    batch, heads = 2, 3
    shape = (batch, tokens, heads, head_dim) if token_major else (batch, heads, tokens, head_dim)
    inputs = [torch.randn(shape, device="cuda").to(dtype) for _ in range(3)]
    if token_major:
        inputs = [x.transpose(1, 2) for x in inputs]
    q, k, v = [x.requires_grad_() for x in inputs]
    grad = torch.randn(batch, heads, tokens, head_dim, device="cuda").to(dtype)

    out = fast_sparse_attention(q, k, v, layout)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    reference_inputs = [x.detach().float().requires_grad_() for x in (q, k, v)]
    expected = brute_force_attention(*reference_inputs, allowed)
    expected_grads = torch.autograd.grad(expected, reference_inputs, grad.double())

    def relative_error(a, e):
        return ((a.double() - e).abs().max() / e.abs().max()).item()

    errors = [relative_error(out, expected)] + [relative_error(a, e) for a, e in zip(grads, expected_grads)]
    assert errors[0] < 2e-2 and max(errors[1:]) < 3e-2, f"relative errors out, dq, dk, dv: {errors}"
