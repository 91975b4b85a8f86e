"""GPU: the routed attention with the real kernels (cuDNN SDPA, flex, fast) inside the DiT, bf16."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffsynth.pipelines.wan_video import model_fn_wan_video

from iasa.attention.layout import SparseLayout
from iasa.video.assembly import build_random
from iasa.video.attention_patch import RoutedAttention, SelfAttentionArgs, patch_self_attention
from iasa.video.config import ARCHITECTURES, CLIP_FEATURE_DIM, CLIP_TOKENS, CONDITION_CHANNELS
from iasa.video.denoiser import FlowConditions, predict_flow, rope_frequencies

pytestmark = pytest.mark.gpu

# Head dim 128 as in the 14B model (the kernels' main case), otherwise tiny.
ARCH = dataclasses.replace(ARCHITECTURES["tiny"], dim=256, num_heads=2, ffn_dim=512)
FRAMES, HEIGHT, WIDTH = 5, 16, 32  # 5 latent frames of 8 x 16 = 128 tokens (one block)


def inputs(device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, torch.bfloat16)

    return {
        "latents": randn(1, 16, FRAMES, HEIGHT, WIDTH),
        "timestep": torch.tensor([600.0], device=device, dtype=torch.bfloat16),
        "context": randn(1, ARCH.text_length, ARCH.text_dim),
        "clip_feature": randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM),
        "y": randn(1, CONDITION_CHANNELS, FRAMES, HEIGHT, WIDTH),
    }


def flow(dit, device: torch.device, layout: SparseLayout | None = None, backend: str = "reference") -> torch.Tensor:
    x = inputs(device)
    conditions = FlowConditions(x["context"], x["clip_feature"], x["y"], None)
    return predict_flow(dit, x["latents"], x["timestep"], conditions, layout, backend)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a.float() - b.float()).norm() / b.float().norm()) < 2e-2)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return build_random("dit", ARCH, torch.device("cuda"), torch.bfloat16)


def test_dense_route_matches_diffsynth_on_gpu(dit):
    device = torch.device("cuda")
    with torch.no_grad():
        expected = model_fn_wan_video(dit=dit, **inputs(device))
        patch_self_attention(dit)
        assert close(flow(dit, device), expected)


def restrictive_layout(device: torch.device) -> SparseLayout:
    tokens = (HEIGHT // 2) * (WIDTH // 2)
    selection = torch.eye(FRAMES, dtype=torch.bool) | torch.ones(FRAMES, FRAMES, dtype=torch.bool).tril(-1)
    regions = (torch.arange(FRAMES * tokens).view(FRAMES, tokens) // 17) % 4
    return SparseLayout(frame_selection=selection, token_regions=regions, grid_size=(HEIGHT // 2, WIDTH // 2)).to(device)


@pytest.mark.parametrize("backend", ["flex", "fast"])
def test_sparse_kernels_match_the_reference_in_the_routed_op(dit, backend):
    device = torch.device("cuda")
    attention = RoutedAttention(ARCH.num_heads)
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, FRAMES * (HEIGHT // 2) * (WIDTH // 2), ARCH.dim, generator=generator).to(device, torch.bfloat16) for _ in range(3))
    freqs = rope_frequencies(dit, FRAMES, HEIGHT // 2, WIDTH // 2, device)
    layout = restrictive_layout(device)
    with torch.no_grad():
        dense = attention(q, k, v, SelfAttentionArgs.for_forward(freqs, None, "reference"))
        expected = attention(q, k, v, SelfAttentionArgs.for_forward(freqs, layout, "reference"))
        got = attention(q, k, v, SelfAttentionArgs.for_forward(freqs, layout, backend))
    assert close(got, expected)
    assert not close(dense, expected)  # the layout matters, so agreeing with the reference means something


@pytest.mark.parametrize("backend", ["flex", "fast"])
def test_sparse_kernels_run_inside_the_dit(dit, backend):
    device = torch.device("cuda")
    layout = restrictive_layout(device)
    with torch.no_grad():
        patch_self_attention(dit)
        expected = flow(dit, device, layout, "reference")
        assert close(flow(dit, device, layout, backend), expected)
