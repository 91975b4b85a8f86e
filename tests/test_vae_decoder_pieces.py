"""The decoder stage's truncated backpropagation through time (pretrain_vae decoder_pieces, a tiny random VAE on
the CPU): the pieces, decoded with the carried causal caches, give diffsynth's whole-clip decode; no gradient
crosses a piece boundary; decoder_pieces=1 is the step the stage took before pieces existed."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iasa.config import ConfigError, load_config
from iasa.train.config import VaeLossConfig, VaePretrainConfig
from iasa.train.finetune import MODEL_FOLDER
from iasa.train.model import load_training_components
from iasa.train.model_folder import save_dit, save_text_encoder, save_vae
from iasa.train.vae_pretrain import (
    encode_clips,
    latent_pieces,
    move_vae_scale,
    piece_losses,
    reconstruction_loss,
    run_vae_pretrain,
)
from iasa.video.assembly import build_random, load_wan_components
from iasa.video.config import ARCHITECTURES, WanModelConfig
from iasa.video.vae_decode import WanDecoderState, decode_latent_frames

LOSS = VaeLossConfig(latent_scale_weight=0.0)  # the decoder stage's: the frozen encoder's scale cannot change
FRAMES = 13  # video frames of the test clips: 4 latent frames


@functools.lru_cache(maxsize=1)
def _base_vae():
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32)
    move_vae_scale(vae, torch.device("cpu"))
    return vae


def fresh_vae():
    return copy.deepcopy(_base_vae())


def test_clip_pins_the_loss_the_stage_computed_before_pieces() -> None:
    """Before decoder_pieces existed, reconstruction_loss(vae, clips, VaeLossConfig(latent_scale_weight=0.1),
    train_encoder=False) gave these values on this VAE and clip (the previous commit's code, run once)."""
    vae = fresh_vae()
    clips = torch.rand(2, 3, FRAMES, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    losses = reconstruction_loss(vae, clips, VaeLossConfig(latent_scale_weight=0.1), train_encoder=False)
    pinned = {"total": 1.006544828414917, "l1": 0.5449441075325012, "mse": 0.42195162177085876,
              "latent_rms": 0.3703240752220154}  # fmt: skip
    assert {key: float(value) for key, value in losses.items()} == pinned


def test_latent_pieces_split_consecutively_and_refuse_too_many() -> None:
    assert latent_pieces(33, 4) == [slice(0, 9), slice(9, 17), slice(17, 25), slice(25, 33)]
    assert latent_pieces(9, 1) == [slice(0, 9)]
    assert latent_pieces(3, 3) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    with pytest.raises(ValueError, match="3 latent frames cannot be split into 4"):
        latent_pieces(3, 4)


def test_pieces_with_the_carried_caches_decode_the_whole_clip() -> None:
    vae = fresh_vae()
    latents = torch.randn(2, 16, 7, 2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = vae.model.decode(latents, vae.scale)  # diffsynth: the whole clip, one latent frame per call
        state, pieces = WanDecoderState(), []
        for piece in latent_pieces(7, 3):  # 3, 2, 2 latent frames: 9, 8, 8 video frames
            frames, state = decode_latent_frames(vae, latents[:, :, piece], state, latent_frames_per_call=1)
            pieces.append(frames)
            state = state.detached()
    assert [piece.shape[2] for piece in pieces] == [9, 8, 8]
    assert expected.abs().max() > 0.01  # a picture, not a constant
    torch.testing.assert_close(torch.cat(pieces, dim=2), expected, rtol=1e-5, atol=1e-6)


def test_each_piece_loss_is_its_share_of_the_whole_clip_decode() -> None:
    """The training path's per-piece losses are those of diffsynth's whole-clip frames over each piece's frames,
    weighted by its share of the clip, so they sum to the whole clip's loss."""
    vae = fresh_vae()
    clips = torch.rand(2, 3, FRAMES, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        latents = encode_clips(vae, clips, train_encoder=False)
        whole = vae.model.decode(latents, vae.scale).clamp(-1, 1)
        losses = list(piece_losses(vae, clips, latents, 2, LOSS))  # latent frames 0-1 (5 frames), 2-3 (8 frames)
    for got, frames in zip(losses, [slice(0, 5), slice(5, 13)], strict=True):
        share = (frames.stop - frames.start) / FRAMES
        l1 = F.l1_loss(whole[:, :, frames], clips[:, :, frames])
        mse = F.mse_loss(whole[:, :, frames], clips[:, :, frames])
        torch.testing.assert_close(got["l1"], share * l1, rtol=1e-5, atol=0)
        torch.testing.assert_close(got["total"], share * (l1 + mse), rtol=1e-5, atol=0)
    torch.testing.assert_close(sum(piece["total"] for piece in losses), F.l1_loss(whole, clips) + F.mse_loss(whole, clips))


def test_no_gradient_crosses_a_piece_boundary_and_one_piece_keeps_it() -> None:
    vae = fresh_vae()
    clips = torch.rand(1, 3, FRAMES, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        encoded = encode_clips(vae, clips, train_encoder=False)

    def gradient_of_the_last_frames(pieces: int) -> torch.Tensor:
        latents = encoded.clone().requires_grad_(True)
        *_, last = piece_losses(vae, clips, latents, pieces, LOSS)  # the losses of frames 5-12 (latent 2-3)
        last["total"].backward()
        return latents.grad

    cut = gradient_of_the_last_frames(2)
    assert torch.count_nonzero(cut[:, :, :2]) == 0  # the first piece's latents: cut off
    assert torch.count_nonzero(cut[:, :, 2:]) > 0.9 * cut[:, :, 2:].numel()
    # Uncut (diffsynth's whole-clip decode), the same frames' loss does reach the first latent frames.
    uncut = encoded.clone().requires_grad_(True)
    decoded = vae.model.decode(uncut, vae.scale).clamp(-1, 1)[:, :, 5:]
    (F.l1_loss(decoded, clips[:, :, 5:]) + F.mse_loss(decoded, clips[:, :, 5:])).backward()
    assert torch.count_nonzero(uncut.grad[:, :, :2]) > 0.9 * uncut.grad[:, :, :2].numel()
    # One piece: the whole clip's loss, and its gradient is diffsynth's whole-clip decode's, bit for bit.
    whole = encoded.clone().requires_grad_(True)
    decoded = vae.model.decode(whole, vae.scale).clamp(-1, 1)
    (F.l1_loss(decoded, clips) + F.mse_loss(decoded, clips)).backward()
    assert torch.equal(gradient_of_the_last_frames(1), whole.grad)


def test_one_piece_is_the_whole_clip_step_exactly() -> None:
    """decoder_pieces=1: the loss and every decoder gradient are diffsynth's whole-clip decode's, bit for bit."""
    clips = torch.rand(2, 3, FRAMES, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1

    def decoder_gradients(vae, total: torch.Tensor) -> dict[str, torch.Tensor]:
        total.backward()
        return {key: parameter.grad for key, parameter in vae.model.decoder.named_parameters()}

    reference = fresh_vae().requires_grad_(True)
    with torch.no_grad():
        latents = reference.model.encode(clips, reference.scale)
    decoded = reference.model.decode(latents, reference.scale).clamp(-1, 1)
    expected_total = F.l1_loss(decoded, clips) + F.mse_loss(decoded, clips)
    expected = decoder_gradients(reference, expected_total)

    vae = fresh_vae().requires_grad_(True)
    (losses,) = piece_losses(vae, clips, encode_clips(vae, clips, train_encoder=False), 1, LOSS)
    assert torch.equal(losses["total"], expected_total)
    got = decoder_gradients(vae, losses["total"])
    assert got.keys() == expected.keys() and all(torch.equal(got[key], expected[key]) for key in got)


def test_decoder_stage_in_pieces_trains_the_decoder_alone(tmp_path: Path, make_dataset) -> None:
    dataset = make_dataset(tmp_path / "dataset", clips=1)
    folder = tmp_path / "source"
    torch.manual_seed(0)
    components = load_wan_components(WanModelConfig(model_size="mini", model_dir=None, dtype="float32", device="cpu"))
    folder.mkdir()
    for save, part in ((save_dit, components.dit), (save_vae, components.vae), (save_text_encoder, components.text_encoder)):
        save(part, folder)
    config = load_config(VaePretrainConfig, "config/miniature/vae_decoder_long.yaml", [
        f"data.dataset_dir={dataset}", "data.num_frames=9", "data.crop=16", "data.batch_size=2", "decoder_pieces=2",
        "model.model_size=mini", f"model.model_dir={folder}", f"run.output_dir={tmp_path / 'decoder'}",
        "run.max_steps=2", "run.time_limit_s=null", "optim.warmup_steps=0", "model.device=cpu",
        "model.dtype=float32", "run.mixed_precision=fp32",
    ])  # fmt: skip
    components = load_training_components(config.model, ("dit", "text_encoder", "vae"))
    before = {key: value.clone() for key, value in components.vae.model.state_dict().items()}
    run_vae_pretrain(config, components)
    after = components.vae.model.state_dict()
    moved = {key for key in after if not torch.equal(after[key], before[key])}
    assert moved and all(key.startswith(("conv2.", "decoder.")) for key in moved)
    assert any(key.startswith("decoder.head") for key in moved)  # the pieces' gradients reached the output layer
    assert (tmp_path / "decoder" / MODEL_FOLDER / "Wan2.1_VAE.safetensors").is_file()


def test_decoder_pieces_must_fit_the_clip_and_need_a_frozen_encoder() -> None:
    base = ["model.model_dir=outputs/x", "data.num_frames=9"]
    with pytest.raises(ConfigError, match="decoder_pieces"):
        load_config(VaePretrainConfig, "config/miniature/vae_decoder_long.yaml", [*base, "decoder_pieces=4"])
    with pytest.raises(ConfigError, match="train_encoder"):
        load_config(VaePretrainConfig, "config/miniature/vae.yaml", ["decoder_pieces=2"])
    assert load_config(VaePretrainConfig, "config/miniature/vae_decoder_long.yaml", [*base, "decoder_pieces=3"]).decoder_pieces == 3
