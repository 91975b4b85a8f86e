"""TAEHV for Wan 2.1 (iasa.video.tae): the official key layout, strict loading from a written checkpoint,
streamed decode == whole-clip decode, bounded stream state, Wan's frame-count rule, pinned outputs.

The pinned values come from this implementation on seeded weights; on the same weights it matched the
reference taehv.py (madebyollin/taehv: TAEHV.decode_video parallel and sequential, StreamingTAEHV) to 1.2e-7.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iasa.errors import InputError, MissingFileError
from iasa.video.tae import (
    TAE_ARCHITECTURES,
    TaeArchitecture,
    TaeCheckpointError,
    TaeDecoder,
    TaeDecoderState,
    TaeEncoder,
    decode_clip,
    decode_step,
    load_tae_decoder,
    save_tae_decoder,
)

TINY = TAE_ARCHITECTURES["tiny"]


def memblock_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    c = channels
    return {
        f"{prefix}.conv.0.weight": (c, 2 * c, 3, 3), f"{prefix}.conv.0.bias": (c,),
        f"{prefix}.conv.2.weight": (c, c, 3, 3), f"{prefix}.conv.2.bias": (c,),
        f"{prefix}.conv.4.weight": (c, c, 3, 3), f"{prefix}.conv.4.bias": (c,),
    }  # fmt: skip


def official_taew2_1_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of taew2_1.pth, written out from taehv.py's TAEHV() for Wan 2.1 (no TGrow patching:
    the first decoder TGrow has stride 1 in the file too)."""
    shapes = {
        "decoder.1.weight": (256, 16, 3, 3), "decoder.1.bias": (256,),
        "decoder.7.conv.weight": (256, 256, 1, 1), "decoder.8.weight": (128, 256, 3, 3),
        "decoder.13.conv.weight": (256, 128, 1, 1), "decoder.14.weight": (64, 128, 3, 3),
        "decoder.19.conv.weight": (128, 64, 1, 1), "decoder.20.weight": (64, 64, 3, 3),
        "decoder.22.weight": (3, 64, 3, 3), "decoder.22.bias": (3,),
        "encoder.0.weight": (64, 3, 3, 3), "encoder.0.bias": (64,),
        "encoder.2.conv.weight": (64, 128, 1, 1), "encoder.3.weight": (64, 64, 3, 3),
        "encoder.7.conv.weight": (64, 128, 1, 1), "encoder.8.weight": (64, 64, 3, 3),
        "encoder.12.conv.weight": (64, 64, 1, 1), "encoder.13.weight": (64, 64, 3, 3),
        "encoder.17.weight": (16, 64, 3, 3), "encoder.17.bias": (16,),
    }  # fmt: skip
    for indices, channels in (((3, 4, 5), 256), ((9, 10, 11), 128), ((15, 16, 17), 64)):
        for index in indices:
            shapes.update(memblock_shapes(f"decoder.{index}", channels))
    for index in (4, 5, 6, 9, 10, 11, 14, 15, 16):
        shapes.update(memblock_shapes(f"encoder.{index}", 64))
    return shapes


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights that keep activations at a useful scale (PyTorch's default init shrinks them towards 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(module.named_parameters()):
            scale = math.prod(parameter.shape[1:]) ** -0.5 if parameter.ndim == 4 else 0.1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module.eval()


def tiny_decoder(seed: int = 0) -> TaeDecoder:
    return seeded(TaeDecoder(TINY), seed)


def latents(batch: int = 1, frames: int = 4, height: int = 3, width: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 16, frames, height, width, generator=torch.Generator().manual_seed(seed)) * 2


def write_checkpoint(path, arch: TaeArchitecture = TINY, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A checkpoint as the official one is stored: torch.save of one plain dict, encoder.* and decoder.*."""
    state = {**seeded(TaeEncoder(arch), seed + 1).state_dict(), **seeded(TaeDecoder(arch), seed).state_dict()}
    state = {name: tensor.to(dtype) for name, tensor in state.items()}
    torch.save(state, path)
    return state


def test_modules_have_the_official_taew2_1_key_layout():
    with torch.device("meta"):
        built = {**TaeEncoder().state_dict(), **TaeDecoder().state_dict()}
    assert {name: tuple(t.shape) for name, t in built.items()} == official_taew2_1_shapes()
    assert len(built) == 128


def test_full_size_random_checkpoint_loads_through_the_real_loader(tmp_path):
    path = tmp_path / "taew2_1.pth"
    state = write_checkpoint(path, TAE_ARCHITECTURES["taew2_1"], dtype=torch.float16)
    decoder = load_tae_decoder(path, "cpu", torch.float32)
    assert decoder.arch == TAE_ARCHITECTURES["taew2_1"]
    assert torch.equal(decoder.decoder[3].conv[0].weight, state["decoder.3.conv.0.weight"].float())
    assert not any(p.requires_grad for p in decoder.parameters()) and not decoder.training
    assert decode_clip(decoder, latents(frames=2, height=2, width=2)).shape == (1, 3, 5, 16, 16)


def test_tiny_checkpoint_round_trips_and_safetensors_too(tmp_path):
    write_checkpoint(tmp_path / "tiny.pth")
    loaded = load_tae_decoder(tmp_path / "tiny.pth")
    assert loaded.arch == TINY
    expected = decode_clip(tiny_decoder(), latents())
    torch.testing.assert_close(decode_clip(loaded, latents()), expected, rtol=0, atol=0)
    save_tae_decoder(loaded, tmp_path / "decoder.safetensors")  # decoder keys only: also accepted
    again = load_tae_decoder(tmp_path / "decoder.safetensors")
    torch.testing.assert_close(decode_clip(again, latents()), expected, rtol=0, atol=0)
    assert not list(tmp_path.glob(".decoder-*"))  # the atomic write left no temporary file


def test_pinned_output_values():
    video = decode_clip(tiny_decoder(), latents(frames=3))
    assert video.shape == (1, 3, 9, 24, 32)
    got = video[0, :, [0, 4, 8], 13, 0].flatten()
    expected = torch.tensor(PINNED_DECODE)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert 0.05 < (video > -1).float().mean() < 0.95  # not one clamped colour


# video[0, colour, frames 0 / 4 / 8, row 13, column 0]
PINNED_DECODE = [-0.93931, -0.8018, -0.57093, -0.7065, -0.6826, -0.66131, -1.0, -1.0, -0.86822]


def test_pinned_encoder_values_and_frame_rule():
    encoder = seeded(TaeEncoder(TINY), 3)
    video = torch.rand(1, 3, 9, 16, 24, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        z = encoder(video)
    assert z.shape == (1, 16, 3, 2, 3)  # 9 frames, padded to 12 with the last frame -> 3 latent frames
    torch.testing.assert_close(z[0, :4, :, 1, 2].flatten(), torch.tensor(PINNED_ENCODE), rtol=0, atol=1e-5)


PINNED_ENCODE = [
    0.12518, 0.21859, 0.30054, -0.03801, -0.21024, -0.24524, 0.04863, -0.05457, -0.12402, -0.01436, 0.07219, 0.08161,
]


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_t_latent_frames_give_wan_frame_count(frames):
    assert decode_clip(tiny_decoder(), latents(frames=frames)).shape[2] == 4 * (frames - 1) + 1


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_streaming_equals_whole_clip(chunk):
    decoder = tiny_decoder()
    z = latents(batch=2, frames=7)
    whole = decode_clip(decoder, z)
    state, pieces = TaeDecoderState(), []
    for start in range(0, 7, chunk):
        frames, state = decode_step(decoder, z[:, :, start : start + chunk], state)
        step = min(chunk, 7 - start)
        assert frames.shape[2] == (4 * step - 3 if start == 0 else 4 * step)  # frames out as soon as complete
        pieces.append(frames)
    assert state.latent_frames == 7
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=0, atol=2e-6)
    torch.testing.assert_close(decode_clip(decoder, z, chunk), whole, rtol=0, atol=2e-6)


def test_stream_state_does_not_grow_with_the_stream():
    decoder = tiny_decoder()
    z = latents(batch=2, frames=10, height=3, width=4)
    # One frame per MemBlock: 3 at each stage's width and resolution (latent, x2, x4).
    widths, sides = TINY.decoder_channels[:3], (1, 2, 4)
    expected_bytes = sum(3 * 2 * c * (3 * s) * (4 * s) * 4 for c, s in zip(widths, sides))
    state, sizes = TaeDecoderState(), []
    for t in range(10):
        _, state = decode_step(decoder, z[:, :, t : t + 1], state)
        sizes.append(sum(tensor.untyped_storage().nbytes() for tensor in state.block_inputs))
    assert len(state.block_inputs) == 9
    assert sizes == [expected_bytes] * 10


def test_step_without_latent_frames_is_refused():
    with pytest.raises(ValueError, match="at least one latent frame"):
        decode_step(tiny_decoder(), latents(frames=0), TaeDecoderState())


# ------------------------------------------------------------------------------------------------ errors
def test_missing_file_names_the_path_and_where_to_get_it(tmp_path):
    path = tmp_path / "checkpoints" / "taew2_1.pth"
    with pytest.raises(MissingFileError) as caught:
        load_tae_decoder(path)
    message = str(caught.value)
    assert str(path) in message and "https://github.com/madebyollin/taehv" in message and "taew2_1.pth" in message


@pytest.mark.parametrize("name", ["taew2_1.pth", "taew2_1.safetensors"])
def test_truncated_file_is_a_one_line_error_naming_it(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".pth"):
        write_checkpoint(path)
    else:
        save_tae_decoder(tiny_decoder(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TaeCheckpointError) as caught:
        load_tae_decoder(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, InputError)


def test_nan_weight_names_file_and_tensor(tmp_path):
    path = tmp_path / "taew2_1.pth"
    state = write_checkpoint(path)
    state["decoder.9.conv.2.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, path)
    with pytest.raises(TaeCheckpointError, match=r"decoder\.9\.conv\.2\.weight") as caught:
        load_tae_decoder(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("decoder.22.bias"), "1 missing keys"),
        (lambda s: s.update({"decoder.23.weight": torch.zeros(3)}), "1 unexpected keys"),
        (lambda s: s.pop("encoder.17.bias"), "1 missing keys"),  # encoder keys: all or none
        (lambda s: s.update({"decoder.3.conv.2.weight": torch.zeros(16, 16, 1, 1)}), r"decoder\.3\.conv\.2\.weight has shape"),
        (lambda s: s.pop("decoder.8.weight"), "not a TAEHV checkpoint"),
    ],
)
def test_layout_mismatch_is_an_error_naming_the_keys(tmp_path, edit, match):
    path = tmp_path / "taew2_1.pth"
    state = write_checkpoint(path)
    edit(state)
    torch.save(state, path)
    with pytest.raises(TaeCheckpointError, match=match):
        load_tae_decoder(path)


def test_checkpoint_for_other_latents_is_refused(tmp_path):
    path = tmp_path / "taew2_2.pth"
    write_checkpoint(path, TaeArchitecture(latent_channels=48, decoder_channels=(16, 8, 8, 8), encoder_channels=8))
    with pytest.raises(TaeCheckpointError, match="48-channel latents"):
        load_tae_decoder(path)


def test_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "taew2_1.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(TaeCheckpointError, match="not a state dict"):
        load_tae_decoder(path)


# ---------------------------------------------------------------------------------------------- pipeline
def tiny_model_config():
    from iasa.video.config import VideoModelConfig

    return VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu")


def test_pipeline_decodes_with_the_tae_when_asked(tmp_path):
    from iasa.video.config import AttentionPatchConfig, InferenceSpeedConfig, LongVideoConfig, SamplerConfig
    from iasa.video.pipeline import VideoGenerator

    write_checkpoint(tmp_path / "taew2_1.pth")
    speed = InferenceSpeedConfig(decoder="tae", tae_checkpoint=str(tmp_path / "taew2_1.pth"), vae_latent_frames_per_call=2)
    generator = VideoGenerator.from_config(tiny_model_config(), AttentionPatchConfig(), LongVideoConfig(), speed)
    steps = []
    generator.tae.register_forward_pre_hook(lambda module, args: steps.append(args[0]))
    pose = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    video = generator.generate(pose[0], pose, pose[0], None, SamplerConfig(num_steps=1, cfg_scale=1.0), progress=False)
    assert [step.shape[2] for step in steps] == [2, 1]  # 3 latent frames streamed 2 + 1
    expected = decode_clip(tiny_decoder(), torch.cat(steps, dim=2), 2)[0]  # the file's weights, same steps
    expected = ((expected + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert video.shape == (9, 32, 32, 3)
    # Equal up to a value sitting on a rounding boundary (CPU convolution kernels may differ between runs).
    difference = np.abs(video.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999


def test_pipeline_reports_a_missing_tae_file_and_an_unknown_decoder(tmp_path):
    from iasa.config import ConfigError
    from iasa.video.config import AttentionPatchConfig, InferenceSpeedConfig, LongVideoConfig
    from iasa.video.pipeline import VideoGenerator

    speed = InferenceSpeedConfig(decoder="tae", tae_checkpoint=str(tmp_path / "taew2_1.pth"))
    with pytest.raises(MissingFileError, match="madebyollin/taehv"):
        VideoGenerator.from_config(tiny_model_config(), AttentionPatchConfig(), LongVideoConfig(), speed)
    with pytest.raises(ConfigError, match="speed.decoder"):
        VideoGenerator.from_config(tiny_model_config(), AttentionPatchConfig(), LongVideoConfig(), InferenceSpeedConfig(decoder="taehv"))
