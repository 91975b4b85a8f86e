"""decode_video equals diffsynth's WanVideoVAE.decode on a tiny random VAE (CPU), in both memory formats, and
wan_decode_step streams the same video."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.vae_decode import WanDecoderState, decode_video, decoder_steps, wan_decode_step


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
    # The caches live in the explicit state, not on the module (diffsynth's leftovers stay untouched), and a
    # second decode (fresh caches) gives the same video.
    leftover = list(vae.model._feat_map)
    torch.testing.assert_close(decode_video(vae, z, memory_format=memory_format), got, rtol=0, atol=0)
    assert all(a is b for a, b in zip(vae.model._feat_map, leftover, strict=True))


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


@pytest.mark.parametrize(
    "batch, chunks, per_call",
    # Steps as decode_video's own (same batch, same steps): bit for bit; any other split or batch: the same
    # video up to float32 rounding (other convolution shapes).
    [(1, [1] * 6, 1), (1, [1, 2, 2, 1], 2), (2, [2, 2, 2], None), (1, [3, 3], None), (2, [6], None)],
)
def test_streamed_decode_equals_decode_video(batch, chunks, per_call):
    vae = copy.deepcopy(_base_vae())
    z = latents(batch=batch, frames=6)
    expected = decode_video(vae, z, latent_frames_per_call=per_call or 1)
    state, pieces, start = WanDecoderState(), [], 0
    for size in chunks:
        frames, state = wan_decode_step(vae, z[:, :, start : start + size], state)
        # Frames go out as soon as their latent frame is in: 1 for latent frame 0, 4 for each further one.
        assert frames.shape[2] == (4 * size - 3 if start == 0 else 4 * size)
        pieces.append(frames)
        start += size
    tolerance = 0 if per_call else 1e-5
    torch.testing.assert_close(torch.cat(pieces, dim=2), expected, rtol=tolerance, atol=tolerance)


def test_stream_state_is_explicit_and_bounded():
    vae = copy.deepcopy(_base_vae())
    z = latents(frames=8)
    state, sizes = WanDecoderState(), []
    for t in range(3):
        _, state = wan_decode_step(vae, z[:, :, t : t + 1], state)
    # The same state decodes the same next frames twice: nothing is kept on the module between steps.
    first, _ = wan_decode_step(vae, z[:, :, 3:5], state)
    again, _ = wan_decode_step(vae, z[:, :, 3:5], state)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    for t in range(3, 8):
        _, state = wan_decode_step(vae, z[:, :, t : t + 1], state)
        sizes.append(sum(c.untyped_storage().nbytes() for c in state.caches if isinstance(c, torch.Tensor)))
    assert sizes == [sizes[0]] * 5 and sizes[0] > 0  # the last 2 frames per convolution, whatever the length
    with pytest.raises(ValueError, match="at least one latent frame"):
        wan_decode_step(vae, z[:, :, :0], state)
