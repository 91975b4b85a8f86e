"""train_tae_decoder (iasa.train.tae_distill) fits a tiny TAE decoder to a tiny random Wan VAE's decoded frames."""

from __future__ import annotations

import itertools

import pytest
import torch

from iasa.train.tae_distill import train_tae_decoder, vae_decoded_pairs
from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.tae import TaeArchitecture, TaeDecoder, decode_clip
from iasa.video.vae_decode import decode_video

STUDENT = TaeArchitecture(decoder_channels=(32, 16, 16, 16), encoder_channels=8)


@pytest.fixture
def one_thread():
    """200 steps on tensors this small: more threads only add synchronisation (and thrash on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_distilled_decoder_reproduces_the_vae_frames_far_better_than_at_the_start(one_thread):
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32)
    latents = [torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))]
    pairs = list(vae_decoded_pairs(latents, lambda z: decode_video(vae, z)))
    frames = pairs[0][1]
    assert frames.shape == (1, 3, 5, 32, 32)
    # The best prediction that ignores the latents' spatial content: every pixel's mean over the clip.
    mean_frame_l1 = (frames - frames.mean(dim=2, keepdim=True)).abs().mean().item()
    torch.manual_seed(0)
    student = TaeDecoder(STUDENT)
    losses = train_tae_decoder(student, itertools.cycle(pairs), steps=200, learning_rate=3e-3, progress=False)
    final = sum(losses[-10:]) / 10
    assert len(losses) == 200
    assert final < losses[0] / 5
    assert final < 0.9 * mean_frame_l1
    # Ready for inference: frozen, eval mode, and its clamped decode is as close as the training loss says.
    assert not student.training and not any(p.requires_grad for p in student.parameters())
    assert (decode_clip(student, latents[0]) - frames).abs().mean().item() <= final * 1.05


def test_running_out_of_pairs_and_an_unknown_loss_are_errors():
    student = TaeDecoder(STUDENT)
    pairs = [(torch.randn(1, 16, 1, 2, 2), torch.zeros(1, 3, 1, 16, 16))]
    with pytest.raises(ValueError, match="ran out after 1 of 3 steps"):
        train_tae_decoder(student, pairs, steps=3, progress=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_tae_decoder(student, pairs, steps=1, loss="huber", progress=False)
