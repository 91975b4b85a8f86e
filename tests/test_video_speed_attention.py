"""The project's self-attention forward (fused RMSNorm + float32 RoPE + routed attention) equals diffsynth's
SelfAttention.forward (complex128 RoPE) on a tiny DiT: float32 and bf16, with and without LoRA, whole model."""

from __future__ import annotations

import copy

import pytest
import torch
from diffsynth.models.wan_video_dit import AttentionModule, SelfAttention, rope_apply
from diffsynth.pipelines.wan_video import model_fn_wan_video

from iasa.video.attention_patch import (
    RoutedSelfAttention,
    SelfAttentionArgs,
    compiled_norm_rope,
    norm_rope,
    patch_self_attention,
)
from iasa.video.config import ARCHITECTURES
from iasa.video.denoiser import FlowConditions, predict_flow, rope_frequencies
from iasa.video.lora import inject_lora

TINY = ARCHITECTURES["tiny"]
FRAMES, HEIGHT, WIDTH = 3, 4, 6  # token grid: 72 tokens


@pytest.fixture
def dit_with_norms(tiny_dit):
    """A factory of tiny DiTs in a dtype, with non-trivial norm weights (random init leaves them at one)."""
    return lambda dtype=torch.float32: with_random_norms(tiny_dit().to(dtype), dtype)


def with_random_norms(dit, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(3)
    for block in dit.blocks:
        for norm in (block.self_attn.norm_q, block.self_attn.norm_k):
            norm.weight.data = (1 + 0.5 * torch.randn(norm.weight.shape, generator=generator)).to(dtype)
    return dit


def diffsynth_self_attention(module: SelfAttention, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """diffsynth's own forward and attention op, on a copy (so the patched module stays untouched)."""
    original = copy.deepcopy(module)
    original.__class__ = SelfAttention
    original.attn = AttentionModule(module.num_heads)
    return SelfAttention.forward(original, x, freqs)


def freqs_and_input(dit, dtype: torch.dtype, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    freqs = rope_frequencies(dit, FRAMES, HEIGHT, WIDTH, torch.device("cpu"))
    x = torch.randn(2, FRAMES * HEIGHT * WIDTH, TINY.dim, generator=generator).to(dtype)
    return freqs, x


def test_norm_rope_equals_diffsynth_rms_norm_and_rope_apply(tiny_dit):
    freqs, x = freqs_and_input(tiny_dit(), torch.float64)
    weight = torch.rand(TINY.dim, dtype=torch.float64) + 0.5
    expected = rope_apply(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight, freqs, TINY.num_heads)
    dense = SelfAttentionArgs.for_forward(freqs, None, "reference")
    got = norm_rope(x.float(), weight.float(), 1e-6, dense.rope_cos, dense.rope_sin, TINY.num_heads)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_rope_tables_are_the_cos_and_sin_of_the_frequencies(tiny_dit):
    freqs, _ = freqs_and_input(tiny_dit(), torch.float32)
    arguments = SelfAttentionArgs.for_forward(freqs, None, "reference")
    assert arguments.rope_cos.dtype == torch.float32 and arguments.rope_cos.is_contiguous()
    torch.testing.assert_close(torch.complex(arguments.rope_cos.double(), arguments.rope_sin.double()), freqs)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("with_lora", [False, True])
def test_patched_self_attention_equals_diffsynth(dtype, tolerance, with_lora, dit_with_norms):
    dit = dit_with_norms(dtype)
    if with_lora:
        dit = inject_lora(dit, rank=4, alpha=4.0)
        generator = torch.Generator().manual_seed(5)
        for name, parameter in dit.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter change the output
                parameter.data = 0.1 * torch.randn(parameter.shape, generator=generator)
    module = dit.blocks[0].self_attn
    freqs, x = freqs_and_input(dit, dtype)
    with torch.no_grad():
        expected = diffsynth_self_attention(module, x, freqs)
        patch_self_attention(dit)
        assert isinstance(module, RoutedSelfAttention) and isinstance(module, SelfAttention)
        got = module(x, SelfAttentionArgs.for_forward(freqs, None, "reference"))
    assert got.dtype == dtype
    scale = expected.float().abs().max()
    torch.testing.assert_close(got.float() / scale, expected.float() / scale, rtol=0, atol=tolerance)
    if with_lora:
        assert "self_attn.q.lora_A" in str(list(dict(dit.named_parameters())))


def test_patched_whole_dit_equals_diffsynth_bf16(dit_with_norms):
    dit = dit_with_norms(torch.bfloat16)
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(1, 16, FRAMES, 2 * HEIGHT, 2 * WIDTH, generator=generator).bfloat16()
    y = torch.randn(1, 20, FRAMES, 2 * HEIGHT, 2 * WIDTH, generator=generator).bfloat16()
    context = torch.randn(1, TINY.text_length, TINY.text_dim, generator=generator).bfloat16()
    clip_feature = torch.randn(1, 257, 1280, generator=generator).bfloat16()
    timestep = torch.tensor([700.0], dtype=torch.bfloat16)
    with torch.no_grad():
        expected = model_fn_wan_video(dit=dit, latents=latents, timestep=timestep, context=context, clip_feature=clip_feature, y=y).float()
        patch_self_attention(dit)
        got = predict_flow(dit, latents, timestep, FlowConditions(context, clip_feature, y, None)).float()
    scale = expected.abs().max()
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=3e-2)


def test_patched_state_dict_keys_unchanged_and_patch_idempotent(dit_with_norms):
    dit = dit_with_norms()
    keys = set(dit.state_dict())
    patch_self_attention(dit)
    patch_self_attention(dit)
    assert set(dit.state_dict()) == keys
    copied = copy.deepcopy(dit)
    assert isinstance(copied.blocks[1].self_attn, RoutedSelfAttention)


def test_compiled_norm_rope_equals_eager(tiny_dit):
    """The one-kernel version used for CUDA inference traces as one graph and computes the same."""
    freqs, x = freqs_and_input(tiny_dit(), torch.bfloat16)
    weight = (torch.rand(TINY.dim) + 0.5).bfloat16()
    dense = SelfAttentionArgs.for_forward(freqs, None, "reference")
    cos, sin = dense.rope_cos, dense.rope_sin
    with torch.no_grad():
        got = compiled_norm_rope(x, weight, 1e-6, cos, sin, TINY.num_heads)
    expected = norm_rope(x, weight, 1e-6, cos, sin, TINY.num_heads)
    torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=1e-2)
