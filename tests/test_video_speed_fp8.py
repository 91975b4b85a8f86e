"""FP8 linears: the quantise/dequantise math and the emulated scaled matmul against bf16/float32 linears,
and the in-place conversion of a tiny DiT (CPU; the real FP8 kernel is covered by the GPU benchmark)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.attention_patch import patch_self_attention
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.fp8_linear import (
    E4M3_MAX,
    Fp8Linear,
    check_fp8_support,
    compiled_quantize_rows,
    quantize_dit_linears,
    quantize_rows,
)

TINY = ARCHITECTURES["tiny"]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def test_quantize_rows_round_trip_and_scales():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=generator) * torch.tensor([1e-3, 1.0, 30.0, 1e3, 0.0])[:, None]
    values, scales = quantize_rows(x, row_multiple=16)
    assert values.dtype == torch.float8_e4m3fn and values.shape == (16, 64) and scales.shape == (16, 1)
    # Each row's largest magnitude maps onto e4m3's largest value; padding rows are zero.
    torch.testing.assert_close(values[:4].float().abs().amax(-1), torch.full((4,), E4M3_MAX))
    assert values[4:].float().abs().max() == 0
    restored = values.float() * scales
    # e4m3 keeps 3 mantissa bits: relative rounding error <= 2^-4 per element (normal range).
    for row in range(4):
        assert relative_error(restored[row], x[row]) < 2**-4
    assert not torch.equal(restored[:4], x[:4])  # it is a real quantisation


@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_matches_bf16_linear(bias):
    torch.manual_seed(1)
    linear = nn.Linear(128, 96, bias=bias).bfloat16()
    with torch.no_grad():
        linear.weight.mul_(torch.linspace(0.1, 10, 96).bfloat16()[:, None])  # per-channel ranges differ
        if bias:
            linear.bias.normal_()
    x = torch.randn(2, 37, 128).bfloat16()  # 74 tokens: not a multiple of 16
    fp8 = Fp8Linear(linear)
    with torch.no_grad():
        got, expected = fp8(x), linear(x)
    assert got.shape == expected.shape and got.dtype == torch.bfloat16
    assert relative_error(got, expected) < 0.05
    # Exactly the emulated product of the dequantised operands.
    x_q, x_s = quantize_rows(x.reshape(-1, 128))
    w_q, w_s = quantize_rows(linear.weight)
    dequantised = (x_q.float() * x_s) @ (w_q.float() * w_s).t() + (linear.bias.float() if bias else 0)
    torch.testing.assert_close(got.float().reshape(-1, 96), dequantised.bfloat16().float(), rtol=1e-2, atol=1e-2)


def test_compiled_quantize_rows_equals_eager():
    x = torch.randn(37, 64).bfloat16()
    got_values, got_scales = compiled_quantize_rows(x, 16)
    values, scales = quantize_rows(x, 16)
    torch.testing.assert_close(got_scales, scales)
    torch.testing.assert_close(got_values.float(), values.float())


def test_quantized_tiny_dit_stays_close_to_bf16():
    torch.manual_seed(0)
    dit = build_random("dit", TINY, torch.device("cpu"), torch.bfloat16)
    patch_self_attention(dit)
    generator = torch.Generator().manual_seed(2)
    frames, height, width = 2, 8, 8
    latents = torch.randn(1, 16, frames, height, width, generator=generator).bfloat16()
    timestep = torch.tensor([700.0], dtype=torch.bfloat16)
    context = torch.randn(1, TINY.text_length, TINY.text_dim, generator=generator).bfloat16()
    clip_feature = torch.randn(1, 257, 1280, generator=generator).bfloat16()
    y = torch.randn(1, 20, frames, height, width, generator=generator).bfloat16()
    args = (latents, timestep, FlowConditions(context, clip_feature, y, None))
    with torch.no_grad():
        expected = predict_flow(dit, *args)
        replaced = quantize_dit_linears(dit, check_device=False)
        got = predict_flow(dit, *args)
    # Per block: self-attention q/k/v/o, cross-attention q/k/v/o/k_img/v_img, two feed-forward linears.
    assert replaced == TINY.num_layers * 12
    assert isinstance(dit.blocks[0].ffn[0], Fp8Linear) and isinstance(dit.head.head, nn.Linear)
    assert relative_error(got, expected) < 0.06
    assert not torch.equal(got, expected)


def test_fp8_refused_off_fp8_gpus():
    with pytest.raises(RuntimeError, match="compute capability"):
        check_fp8_support(torch.device("cpu"))
    dit = nn.Module()
    dit.blocks = nn.ModuleList([nn.Linear(16, 16)])
    with pytest.raises(RuntimeError, match="use bf16"):
        quantize_dit_linears(dit)
