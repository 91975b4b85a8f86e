"""GPU: the compiled norm+RoPE and the VAE decode agree with their CPU-tested references."""

from __future__ import annotations

import pytest
import torch

from iasa.video.assembly import build_random
from iasa.video.attention_patch import SelfAttentionArgs, compiled_norm_rope, norm_rope
from iasa.video.config import ARCHITECTURES
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


def test_vae_decode_on_gpu_equals_diffsynth():
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES["tiny"], CUDA, torch.bfloat16)
    latents = torch.randn(1, 16, 3, 8, 8, device=CUDA, dtype=torch.bfloat16)
    expected = vae.decode(latents, device=CUDA)
    for memory_format in ("contiguous", "channels_last_3d"):
        assert relative_error(decode_video(vae, latents, memory_format), expected) < 2e-2
