"""Regional compilation of the DiT blocks (iasa.video.compiled_blocks) on the tiny model, CPU: one graph for
all blocks across layouts and timesteps, no graph break inside a block, and the eager result."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

import iasa.attention.flex as flex
import iasa.video.compiled_blocks as compiled_blocks
from iasa.attention.layout import SparseLayout
from iasa.video.assembly import build_random
from iasa.video.attention_patch import SelfAttentionArgs, patch_self_attention
from iasa.video.config import ARCHITECTURES
from iasa.video.denoiser import FlowConditions, predict_flow, rope_frequencies

TINY = ARCHITECTURES["tiny"]
FRAMES, HEIGHT, WIDTH = 3, 8, 8  # latent grid; tokens (3, 4, 4)
GRID = (HEIGHT // 2, WIDTH // 2)


@pytest.fixture
def aot_eager_blocks(monkeypatch):
    """The process's compiled block under the aot_eager backend (functionalised graph, fake-tensor tracing of
    the attention op, no code generation: seconds on a CPU), with fresh compile caches and counters."""
    torch.compiler.reset()
    counters.clear()
    monkeypatch.setitem(compiled_blocks._COMPILED, "inductor", compiled_blocks.compile_block_function("aot_eager"))
    yield
    torch.compiler.reset()


def tiny_dit(dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    dit = build_random("dit", TINY, torch.device("cpu"), dtype)
    patch_self_attention(dit)
    return dit


def conditions(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, FlowConditions]:
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(1, 16, FRAMES, HEIGHT, WIDTH, generator=generator)
    y = torch.randn(1, 20, FRAMES, HEIGHT, WIDTH, generator=generator)
    context = torch.randn(1, TINY.text_length, TINY.text_dim, generator=generator)
    clip_feature = torch.randn(1, 257, 1280, generator=generator)
    pose = torch.randn(1, TINY.dim, FRAMES, *GRID, generator=generator)
    return latents.to(dtype), FlowConditions(context.to(dtype), clip_feature.to(dtype), y.to(dtype), pose.to(dtype))


def random_layout(seed: int) -> SparseLayout:
    generator = torch.Generator().manual_seed(seed)
    selection = (torch.rand(FRAMES, FRAMES, generator=generator) > 0.5) | torch.eye(FRAMES, dtype=torch.bool)
    regions = torch.randint(0, 3, (FRAMES, GRID[0] * GRID[1]), generator=generator)
    return SparseLayout(selection, regions, GRID, block_size=16, region_names=("face", "hands"))


def test_one_graph_across_layouts_timesteps_and_blocks_and_equal_to_eager(aot_eager_blocks, monkeypatch):
    dit = tiny_dit()
    latents, flow_conditions = conditions()
    layouts = [random_layout(0), random_layout(1)]
    assert not torch.equal(layouts[0].token_regions, layouts[1].token_regions)
    rebuilt = []
    rebuild = compiled_blocks.SparseLayout
    monkeypatch.setattr(compiled_blocks, "SparseLayout", lambda *a: rebuilt.append(a) or rebuild(*a))
    outputs = {}
    with torch.no_grad():
        for index, layout in enumerate(layouts):
            for timestep in (1000.0, 437.0):
                t = torch.tensor([timestep])
                got = predict_flow(dit, latents, t, flow_conditions, layout, "reference", compiled=True)
                expected = predict_flow(dit, latents, t, flow_conditions, layout, "reference")
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
                outputs[index, timestep] = got
    # Two blocks, two layouts, two timesteps: one graph, no recompilation, no graph break.
    assert counters["stats"]["unique_graphs"] == 1
    assert sum(counters["recompiles"].values()) == 0 and not counters["graph_break"]
    # The op found each layout object by its tensors (the kernels' per-layout plan caches stay in use).
    assert rebuilt == []
    # The layouts and timesteps reached the graph as data: four different flows.
    assert not torch.equal(outputs[0, 1000.0], outputs[1, 1000.0])
    assert not torch.equal(outputs[0, 1000.0], outputs[0, 437.0])


def test_dense_attention_is_its_own_graph_and_equal_to_eager(aot_eager_blocks):
    dit = tiny_dit()
    latents, flow_conditions = conditions()
    with torch.no_grad():
        for timestep in (1000.0, 10.0):
            t = torch.tensor([timestep])
            got = predict_flow(dit, latents, t, flow_conditions, None, compiled=True)
            torch.testing.assert_close(got, predict_flow(dit, latents, t, flow_conditions), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("sparse", [False, True])
def test_a_block_has_no_graph_break(sparse):
    dit = tiny_dit()
    latents, flow_conditions = conditions()
    tokens = FRAMES * GRID[0] * GRID[1]
    freqs = rope_frequencies(dit, FRAMES, *GRID, torch.device("cpu"))
    attention = SelfAttentionArgs.for_forward(freqs, random_layout(3) if sparse else None, "reference")
    x = torch.randn(1, tokens, TINY.dim)
    context = torch.randn(1, 257 + TINY.text_length, TINY.dim)
    t_mod = torch.randn(1, 6, TINY.dim)
    torch.compiler.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(compiled_blocks.run_block)(dit.blocks[0], x, context, t_mod, attention)
    torch.compiler.reset()
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    # The attention op is in the graph, with the layout's tensors among the graph's inputs.
    graph = explained.graphs[0]
    assert any(node.target is torch.ops.iasa.self_attention.default for node in graph.graph.nodes)
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    assert len(placeholders) > (8 if sparse else 6)


def test_inductor_block_equals_eager():
    """The real compiler (C++ code on the CPU) on one block: the fused kernels compute the eager values."""
    dit = tiny_dit()
    freqs = rope_frequencies(dit, FRAMES, *GRID, torch.device("cpu"))
    attention = SelfAttentionArgs.for_forward(freqs, random_layout(4), "reference")
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, FRAMES * GRID[0] * GRID[1], TINY.dim, generator=generator)
    context = torch.randn(1, 257 + TINY.text_length, TINY.dim, generator=generator)
    t_mod = torch.randn(1, 6, TINY.dim, generator=generator)
    torch.compiler.reset()
    try:
        with torch.no_grad():
            got = compiled_blocks.compile_block_function()(dit.blocks[1], x, context, t_mod, attention)
            expected = compiled_blocks.run_block(dit.blocks[1], x, context, t_mod, attention)
    finally:
        torch.compiler.reset()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_compiled_blocks_refuse_autograd():
    dit = tiny_dit()
    latents, flow_conditions = conditions()
    with pytest.raises(RuntimeError, match="no_grad"):
        predict_flow(dit, latents, torch.tensor([500.0]), flow_conditions, compiled=True)


@pytest.mark.gpu
def test_fp8_compiled_blocks_on_gpu_match_bf16():
    """On an FP8 GPU with Inductor: torchao's FP8 linears, compiled, stay near the bf16 flow, and the compiled
    FP8 flow equals the eager FP8 flow up to bf16 rounding. Shapes torchao's FP8 GEMM takes: the tiny model's
    64-wide linears made Inductor's scaled-mm lowering find no kernel (NoValidChoicesError), so a DiT of width
    256 (head dim 128, feed-forward 512) on a 3 x 8 x 16 token grid (384 tokens): every GEMM dimension a
    multiple of 16 and >= 128, as in the 14B (5120, 13824; 32760 tokens). The layout's blocks are 128 tokens, the
    tile of the compiled flex kernel (blocks of 16 failed its lowering on the H200: "Q and KV block size must be
    divisible by BLOCK_M and BLOCK_N"), as in the 14B's config."""
    from iasa.video.fp8_linear import check_fp8_support, quantize_dit_fp8

    device = torch.device("cuda")
    try:
        check_fp8_support(device)
    except RuntimeError as error:
        pytest.skip(str(error))
    arch = dataclasses.replace(TINY, dim=256, ffn_dim=512, num_heads=2)
    frames, grid = 3, (8, 16)
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(0)
    dit = build_random("dit", arch, device, torch.bfloat16)
    patch_self_attention(dit)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, torch.bfloat16)

    latents = random(1, 16, frames, 2 * grid[0], 2 * grid[1])
    flow_conditions = FlowConditions(
        random(1, arch.text_length, arch.text_dim), random(1, 257, 1280), random(1, 20, frames, 2 * grid[0], 2 * grid[1]),
        random(1, arch.dim, frames, *grid),
    )  # fmt: skip
    selection = (torch.rand(frames, frames, generator=generator) > 0.5) | torch.eye(frames, dtype=torch.bool)
    regions = torch.randint(0, 3, (frames, grid[0] * grid[1]), generator=generator)
    layout = SparseLayout(selection, regions, grid, block_size=128, region_names=("face", "hands")).to(device)
    t = torch.tensor([700.0], device=device, dtype=torch.bfloat16)
    torch.compiler.reset()
    with torch.no_grad():
        bf16 = predict_flow(dit, latents, t, flow_conditions, layout, "flex").float()
        assert quantize_dit_fp8(dit) == arch.num_layers * 12
        eager = predict_flow(dit, latents, t, flow_conditions, layout, "flex").float()
        compiled = predict_flow(dit, latents, t, flow_conditions, layout, "flex", compiled=True).float()
    torch.compiler.reset()
    block_function = compiled_blocks.compiled_block()
    assert not block_function.failed, block_function.error
    assert 0 < ((eager - bf16).norm() / bf16.norm()).item() < 0.06
    assert ((compiled - eager).norm() / eager.norm()).item() < 0.02


def test_flex_inside_the_compiled_block_equals_eager(aot_eager_blocks, monkeypatch):
    """flex inside the compiled block's attention op: its plan is built before the blocks run
    (prepare_sparse_attention: building a BlockMask runs vmap, which failed inside the op and sent the blocks
    back to eager), and its kernel is the compiled one, as on CUDA (the eager CPU reference cannot run inside
    the op either)."""
    monkeypatch.setattr(flex, "_run_flex", lambda q, k, v, mask: flex._compiled_flex_attention()(q, k, v, block_mask=mask))
    dit = tiny_dit()
    latents, flow_conditions = conditions()
    layout, t = random_layout(5), torch.tensor([800.0])
    with torch.no_grad():
        got = predict_flow(dit, latents, t, flow_conditions, layout, "flex", compiled=True)
        expected = predict_flow(dit, latents, t, flow_conditions, layout, "reference")
    block_function = compiled_blocks.compiled_block()
    assert not block_function.failed, block_function.error
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
