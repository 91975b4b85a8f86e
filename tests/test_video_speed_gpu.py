"""GPU: the compiled norm+RoPE, the FP8 kernel and the VAE decode agree with their CPU-tested references."""

from __future__ import annotations

import pytest
import torch

from iasa.video.assembly import build_random
from iasa.video.attention_patch import SelfAttentionArgs, compiled_norm_rope, norm_rope
from iasa.video.config import ARCHITECTURES
from iasa.video.fp8_linear import Fp8Linear, check_fp8_support, quantize_rows, scaled_matmul
from iasa.video.vae_decode import decode_video

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def test_compiled_norm_rope_on_gpu_equals_eager():
    heads, head_dim, tokens = 4, 128, 300
    angles = torch.rand(tokens, 1, head_dim // 2, dtype=torch.float64, device=CUDA) * 6
    tables = SelfAttentionArgs.for_forward(torch.polar(torch.ones_like(angles), angles), None, "reference")
    cos, sin = tables.rope_cos, tables.rope_sin
    x = torch.randn(1, tokens, heads * head_dim, device=CUDA, dtype=torch.bfloat16)
    weight = torch.rand(heads * head_dim, device=CUDA, dtype=torch.bfloat16) + 0.5
    with torch.no_grad():
        got = compiled_norm_rope(x, weight, 1e-6, cos, sin, heads)
    assert not compiled_norm_rope.failed
    assert relative_error(got, norm_rope(x, weight, 1e-6, cos, sin, heads)) < 1e-2


def test_fp8_kernel_equals_emulation():
    try:
        check_fp8_support(CUDA)
    except RuntimeError as error:
        pytest.skip(str(error))
    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 256).to(CUDA, torch.bfloat16)
    x = torch.randn(3, 333, 512, device=CUDA, dtype=torch.bfloat16)  # 999 tokens: padded to 1008
    fp8 = Fp8Linear(linear)
    with torch.no_grad():
        got = fp8(x)
        x_q, x_s = quantize_rows(x.reshape(-1, 512).cpu())
        emulated = scaled_matmul(x_q, x_s, fp8.weight_fp8.cpu(), fp8.weight_scale.cpu(), fp8.bias.cpu(), torch.float32)
        assert relative_error(got.reshape(-1, 256).cpu(), emulated) < 1e-2
        assert relative_error(got, linear(x)) < 5e-2


def test_vae_decode_on_gpu_equals_diffsynth():
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES["tiny"], CUDA, torch.bfloat16)
    latents = torch.randn(1, 16, 3, 8, 8, device=CUDA, dtype=torch.bfloat16)
    expected = vae.decode(latents, device=CUDA)
    for memory_format in ("contiguous", "channels_last_3d"):
        assert relative_error(decode_video(vae, latents, memory_format), expected) < 2e-2
