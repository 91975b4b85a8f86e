"""decode_video equals diffsynth's WanVideoVAE.decode on a tiny random VAE (CPU), in both memory formats."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.vae_decode import decode_video, decoder_steps


@functools.lru_cache(maxsize=1)
def _base_vae():
    torch.manual_seed(0)
    return build_random("vae", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32)


def latents(batch: int = 1, frames: int = 3) -> torch.Tensor:
    return torch.randn(batch, 16, frames, 4, 6, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last_3d"])
def test_decode_video_equals_diffsynth_decode(memory_format):
    vae = copy.deepcopy(_base_vae())
    z = latents(batch=2)
    expected = vae.decode(z, device="cpu")
    got = decode_video(vae, z, memory_format=memory_format)
    assert got.shape == (2, 3, 4 * (3 - 1) + 1, 32, 48) == expected.shape
    assert got.abs().max() > 0.01  # a real picture, not a constant
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Caches are freed, and a second decode (fresh caches) gives the same video.
    assert all(entry is None for entry in vae.model._feat_map)
    torch.testing.assert_close(decode_video(vae, z, memory_format=memory_format), got)


def test_decode_video_restores_cudnn_benchmark_and_rejects_unknown_format():
    vae = _base_vae()
    before = torch.backends.cudnn.benchmark
    decode_video(vae, latents(frames=1))
    assert torch.backends.cudnn.benchmark == before
    with pytest.raises(ValueError, match="memory_format"):
        decode_video(vae, latents(frames=1), memory_format="nhwc")


def test_memory_format_is_set_per_call():
    vae = copy.deepcopy(_base_vae())
    conv = next(m for m in vae.model.decoder.modules() if isinstance(m, torch.nn.Conv3d) and m.weight.shape[1] > 1)
    decode_video(vae, latents(frames=1), memory_format="channels_last_3d")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    decode_video(vae, latents(frames=1))
    assert conv.weight.is_contiguous()


def test_decoder_steps_cover_the_clip_once():
    assert decoder_steps(21, 4) == [slice(0, 1), slice(1, 5), slice(5, 9), slice(9, 13), slice(13, 17), slice(17, 21)]
    assert decoder_steps(1, 8) == [slice(0, 1)]
    assert decoder_steps(4, 2) == [slice(0, 1), slice(1, 3), slice(3, 4)]


@pytest.mark.parametrize("per_call", [2, 3, 8])
def test_bigger_decoder_steps_give_the_same_video(per_call):
    vae = copy.deepcopy(_base_vae())
    z = latents(frames=6)
    expected = vae.decode(z, device="cpu")
    got = decode_video(vae, z, latent_frames_per_call=per_call)
    assert got.shape == (1, 3, 21, 32, 48)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
