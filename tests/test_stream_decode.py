"""Streaming decode: latent frames decoded as they arrive give the full-clip video (tiny Wan VAE, tiny TAE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.stream_decode import StreamDecoder, to_uint8_frames
from iasa.video.tae import TAE_ARCHITECTURES, TaeDecoder, decode_clip
from iasa.video.vae_decode import decode_video


def seeded_tae(seed: int = 0) -> TaeDecoder:
    decoder = TaeDecoder(TAE_ARCHITECTURES["tiny"])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(decoder.named_parameters()):
            scale = math.prod(parameter.shape[1:]) ** -0.5 if parameter.ndim == 4 else 0.1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return decoder.eval()


def clip_latents(frames: int = 6) -> torch.Tensor:
    return torch.randn(1, 16, frames, 3, 4, generator=torch.Generator().manual_seed(1)) * 2


@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1, 1), (1, 2, 3), (2, 4)])
@pytest.mark.parametrize("kind", ["wan", "tae"])
def test_streamed_decode_equals_the_full_clip_decode(kind, chunks, one_thread):
    latents = clip_latents()
    if kind == "wan":
        torch.manual_seed(0)
        decoder = build_random("vae", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32)
        expected = decode_video(decoder, latents, latent_frames_per_call=1)
    else:
        decoder = seeded_tae()
        expected = decode_clip(decoder, latents)
    stream = StreamDecoder(decoder)
    pieces, start = [], 0
    for size in chunks:
        frames = stream.decode_tensor(latents[:, :, start : start + size])
        # frames go out as soon as their latent frame is decoded: 1 for frame 0, then 4 per latent frame
        assert frames.shape[2] == 4 * size - (3 if start == 0 else 0)
        pieces.append(frames)
        start += size
    streamed = torch.cat(pieces, 2)
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.01  # a real picture, not a constant
    # uint8 frames agree up to a rounding step at .5 boundaries
    difference = to_uint8_frames(streamed).astype(int) - to_uint8_frames(expected).astype(int)
    assert np.abs(difference).max() <= 1
