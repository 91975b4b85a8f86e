"""GPU: the TAE and the streamed Wan VAE decode in bf16 on cuDNN agree with their float32 CPU references."""

from __future__ import annotations

import copy

import pytest
import torch

from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.tae import TAE_ARCHITECTURES, TaeDecoder, TaeDecoderState, decode_clip, decode_step
from iasa.video.vae_decode import WanDecoderState, decode_video, wan_decode_step

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float().cpu() - expected.float().cpu()).norm() / expected.float().cpu().norm()).item()


def test_tae_bf16_on_gpu_whole_streamed_and_channels_last_equal_float32_cpu():
    torch.manual_seed(0)
    decoder = TaeDecoder(TAE_ARCHITECTURES["taew2_1"]).eval()
    with torch.no_grad():
        for parameter in decoder.parameters():  # activations at a useful scale (default init shrinks them)
            parameter.normal_(0, parameter[0].numel() ** -0.5 if parameter.ndim == 4 else 0.1)
    z = torch.randn(1, 16, 6, 30, 52, generator=torch.Generator().manual_seed(1)) * 2
    expected = decode_clip(decoder, z)
    gpu = copy.deepcopy(decoder).to(CUDA, torch.bfloat16)
    whole = decode_clip(gpu, z)
    assert whole.shape == (1, 3, 21, 240, 416) and whole.dtype == torch.bfloat16
    assert relative_error(whole, expected) < 5e-2
    state, pieces = TaeDecoderState(), []
    for t in range(6):
        frames, state = decode_step(gpu, z[:, :, t : t + 1], state)
        pieces.append(frames)
    assert relative_error(torch.cat(pieces, dim=2), whole) < 3e-2
    channels_last = copy.deepcopy(gpu).to(memory_format=torch.channels_last)
    assert relative_error(decode_clip(channels_last, z), whole) < 3e-2


def test_streamed_wan_vae_bf16_on_gpu_equals_decode_video():
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES["tiny"], CUDA, torch.bfloat16)
    z = torch.randn(1, 16, 5, 30, 52, device=CUDA, dtype=torch.bfloat16)
    expected = decode_video(vae, z, "channels_last_3d", 4)
    state, pieces = WanDecoderState(), []
    for t in range(5):
        frames, state = wan_decode_step(vae, z[:, :, t : t + 1], state, "channels_last_3d")
        pieces.append(frames)
    assert relative_error(torch.cat(pieces, dim=2), expected) < 3e-2
