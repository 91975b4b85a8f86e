"""EMAGE in plain PyTorch: official checkpoint layout, strict weights-only loading, windowed inference.

Checkpoints here are tiny (a few channels) but written exactly as the official H-Liu1997/emage_audio
folder: config.json files with the extra keys transformers and the training config leave in them, and
pytorch_model.bin files saved with torch.save (or model.safetensors).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iasa.motion.emage_checkpoint import save_emage
from iasa.motion.emage_config import BODY_PARTS, EmageCheckpointError, EmageConfig
from iasa.motion.emage_inference import EmageMotionGenerator, AudioWindowPlan
from iasa.motion.emage_model import EmageAudioModel
from iasa.motion.emage_vq import EmageMotionDecoder

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_emage_config, write_emage_checkpoint
) -> tuple[Path, EmageAudioModel, EmageMotionDecoder]:
    folder = tmp_path_factory.mktemp("emage") / "emage_audio"
    audio_model, motion_decoder = write_emage_checkpoint(folder, tiny_emage_config())
    return folder, audio_model, motion_decoder


@pytest.fixture(scope="module")
def generator(checkpoint: tuple[Path, EmageAudioModel, EmageMotionDecoder]) -> EmageMotionGenerator:
    return EmageMotionGenerator.from_pretrained(checkpoint[0])


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = round(seconds * SAMPLE_RATE)
    envelope = 0.5 + 0.5 * np.sin(np.arange(samples) * 2 * np.pi * 3 / SAMPLE_RATE)
    return (rng.standard_normal(samples) * 0.1 * envelope).astype(np.float32)


def assert_same_weights(module: torch.nn.Module, reference: torch.nn.Module) -> None:
    loaded, expected = module.state_dict(), reference.state_dict()
    assert loaded.keys() == expected.keys()
    for key in expected:
        assert torch.equal(loaded[key], expected[key]), key


# --- checkpoint layout and loading -------------------------------------------------------------


def test_official_pytorch_layout_loads_strictly(checkpoint, generator, tiny_emage_config) -> None:
    _, audio_model, motion_decoder = checkpoint
    assert_same_weights(generator.audio_model, audio_model)
    for part in BODY_PARTS:
        assert_same_weights(generator.motion_decoder.parts[part], motion_decoder.parts[part])
    assert generator.config == tiny_emage_config()


def test_safetensors_layout_loads_and_predicts_the_same(checkpoint, generator, tmp_path: Path, tiny_emage_config) -> None:
    _, audio_model, motion_decoder = checkpoint
    save_emage(tmp_path, tiny_emage_config(), audio_model, motion_decoder, weights_format="safetensors")
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()
    assert (tmp_path / "emage_vq" / "global" / "model.safetensors").is_file()
    from_safetensors = EmageMotionGenerator.from_pretrained(tmp_path)
    assert_same_weights(from_safetensors.audio_model, audio_model)
    waveform = speech_like(2.5)
    np.testing.assert_array_equal(from_safetensors(waveform).poses, generator(waveform).poses)


def test_renamed_key_is_an_error_naming_both_keys_and_the_folder(tmp_path: Path, tiny_emage_config, write_emage_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    write_emage_checkpoint(folder, tiny_emage_config())
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["motion_proj.weight"] = state.pop("moton_proj.weight")
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(EmageCheckpointError) as error:
        EmageMotionGenerator.from_pretrained(folder)
    message = str(error.value)
    assert "missing keys [moton_proj.weight]" in message
    assert "unexpected keys [motion_proj.weight]" in message
    assert str(folder) in message


def test_missing_vq_key_names_the_part_folder(tmp_path: Path, tiny_emage_config, write_emage_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    write_emage_checkpoint(folder, tiny_emage_config())
    hands = folder / "emage_vq" / "hands" / "pytorch_model.bin"
    state = torch.load(hands, weights_only=True)
    del state["quantizer.embedding.weight"]
    torch.save(state, hands)
    with pytest.raises(EmageCheckpointError, match=r"missing keys \[quantizer.embedding.weight\]") as error:
        EmageMotionGenerator.from_pretrained(folder)
    assert str(folder / "emage_vq" / "hands") in str(error.value)


def test_weights_that_do_not_fit_the_config_are_an_error(tmp_path: Path, tiny_emage_config, write_emage_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    write_emage_checkpoint(folder, tiny_emage_config())
    wider = dataclasses.replace(tiny_emage_config().audio, hidden_size=32)
    torch.save(EmageAudioModel(wider).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(EmageCheckpointError, match="do not fit the config"):
        EmageMotionGenerator.from_pretrained(folder)


def test_pickled_objects_are_refused(tmp_path: Path, tiny_emage_config, write_emage_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    write_emage_checkpoint(folder, tiny_emage_config())
    torch.save({"weights": dataclasses.replace(tiny_emage_config().audio)}, folder / "pytorch_model.bin")
    with pytest.raises(EmageCheckpointError, match="not a weights-only"):
        EmageMotionGenerator.from_pretrained(folder)


def test_missing_checkpoint_says_what_to_download(tmp_path: Path, tiny_emage_config, write_emage_checkpoint) -> None:
    with pytest.raises(EmageCheckpointError, match="huggingface.co/H-Liu1997/emage_audio"):
        EmageMotionGenerator.from_pretrained(tmp_path / "nowhere")
    folder = tmp_path / "ckpt"
    write_emage_checkpoint(folder, tiny_emage_config())
    (folder / "emage_vq" / "lower" / "pytorch_model.bin").unlink()
    with pytest.raises(EmageCheckpointError, match=r"emage_vq/lower has neither model.safetensors nor pytorch_model.bin"):
        EmageMotionGenerator.from_pretrained(folder)


def test_config_missing_an_architecture_key_is_an_error(tmp_path: Path, tiny_emage_config, write_emage_checkpoint) -> None:
    folder = tmp_path / "ckpt"
    write_emage_checkpoint(folder, tiny_emage_config())
    values = json.loads((folder / "config.json").read_text())
    del values["hidden_size"]
    (folder / "config.json").write_text(json.dumps(values))
    with pytest.raises(EmageCheckpointError, match=r"lacks the keys \['hidden_size'\]"):
        EmageMotionGenerator.from_pretrained(folder)
    global_config = folder / "emage_vq" / "global" / "config.json"
    global_values = json.loads(global_config.read_text())
    del global_values["vae_codebook_size"]  # the codebook-free global model may omit it
    global_config.write_text(json.dumps(global_values))
    values["hidden_size"] = 16
    (folder / "config.json").write_text(json.dumps(values))
    assert EmageMotionGenerator.from_pretrained(folder).config.parts["global"].vae_length == 8
    (folder / "config.json").write_text(json.dumps({**values, "hidden_size": "16"}))
    with pytest.raises(EmageCheckpointError, match=r"must be integers: \{'hidden_size': '16'\}"):
        EmageMotionGenerator.from_pretrained(folder)


def test_full_size_model_has_the_official_keys_and_size() -> None:
    config = EmageConfig()
    model = EmageAudioModel(config.audio)
    keys = set(model.state_dict())
    # Keys of the released checkpoint, as named by the official module tree (typos included).
    for key in (
        "moton_proj.weight",
        "position_embeddings.pe",
        "mask_embedding",
        "audio_encoder_face.feat_extractor.0.downsample.0.weight",
        "audio_encoder_body.feat_extractor.5.bn2.num_batches_tracked",
        "motion_encoder.main.8.model.2.weight",
        "transformer_en_layer.self_attn.in_proj_weight",
        "motion_self_encoder.layers.0.linear2.bias",
        "audio_motion_cross_attn_layer.multihead_attn.out_proj.weight",
        "audio_motion_cross_attn.layers.7.norm3.weight",
        "body_motion_decoder_hands.layers.0.linear1.weight",
        "face_motion_decoder.layers.3.multihead_attn.in_proj_bias",
        "motion_cls_lower.fc2.weight",
        "face_cls.fc1.bias",
    ):
        assert key in keys, key
    assert "audio_encoder_face.feat_extractor.2.downsample.0.weight" not in keys  # stride-1 stages have none
    assert model.state_dict()["position_embeddings.pe"].shape == (1, 128, 768)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    assert 138e6 < parameters < 140e6
    vq_keys = set(EmageMotionDecoder(config).parts["upper"].state_dict())
    assert {"encoder.main.0.weight", "encoder.main.5.model.2.bias", "quantizer.embedding.weight", "decoder.main.6.weight"} <= vq_keys


# --- windowed inference ------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "frames"), [(0.1, 3), (2.13, 64), (61.0, 1830)])
def test_output_has_round_duration_times_fps_frames(generator, seconds: float, frames: int) -> None:
    motion = generator(speech_like(seconds))
    assert motion.poses.shape == (frames, 165)
    assert motion.expressions.shape == (frames, 100)
    assert motion.trans.shape == (frames, 3)
    assert motion.betas.shape == (300,) and not motion.betas.any()
    assert motion.fps == 30.0
    assert np.isfinite(motion.poses).all() and np.isfinite(motion.trans).all()
    # Eyes are never predicted; every predicted joint moves somewhere in the clip.
    joints = motion.poses.reshape(frames, 55, 3)
    assert not joints[:, 23:25].any()
    assert np.abs(joints[:, [0, 15, 20, 22, 30]]).sum(axis=(0, 2)).min() > 0


def test_silent_and_near_empty_audio_are_valid(generator) -> None:
    silent = generator(np.zeros(SAMPLE_RATE * 3 // 2, np.float32))
    assert silent.poses.shape == (45, 165) and np.isfinite(silent.poses).all()
    assert generator(np.zeros(100, np.float32)).poses.shape == (0, 165)  # 0.19 frames rounds to none


def test_frame_count_rounds_halves_up(generator) -> None:
    assert generator.plan(2400).num_frames == 5  # 4.5 frames
    assert generator.plan(2399).num_frames == 4


def test_bad_waveforms_are_errors(generator) -> None:
    with pytest.raises(ValueError, match="mono"):
        generator(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        generator(np.full(16000, np.nan, np.float32))


def test_windows_tile_the_clip_with_the_fewest_windows() -> None:
    for frames in list(range(0, 200)) + [1799, 1800, 1801, 1830]:
        plan = AudioWindowPlan(num_frames=frames, window_frames=64, seed_frames=4, sample_rate=SAMPLE_RATE, fps=30)
        assert plan.covered_frames >= frames
        # One window fewer would not reach the end (unless a single window already does).
        assert plan.num_windows == 1 or (plan.num_windows - 1) * 60 + 4 < frames
        kept = [range(w * 60, w * 60 + (64 if w == plan.num_windows - 1 else 60)) for w in range(plan.num_windows)]
        assert [frame for window in kept for frame in window] == list(range(plan.covered_frames))


def test_windows_read_the_official_audio_slices() -> None:
    # PantoMatrix's loop: audio[start_idx * (16000 // 30) : ... + (end_idx - start_idx) * (16000 // 30)] with
    # start_idx = 60 w, end_idx - start_idx = 64: window w is samples [31980 w, 31980 w + 34112).
    ten_minutes = AudioWindowPlan(num_frames=18000, window_frames=64, seed_frames=4, sample_rate=SAMPLE_RATE, fps=30)
    assert [ten_minutes.start_sample(w) for w in range(ten_minutes.num_windows)] == [
        31980 * w for w in range(ten_minutes.num_windows)
    ]
    assert ten_minutes.window_samples == 34112
    plan = AudioWindowPlan(num_frames=150, window_frames=64, seed_frames=4, sample_rate=SAMPLE_RATE, fps=30)
    waveform = torch.arange(80000, dtype=torch.float32)
    windows = plan.audio_windows(waveform)
    assert windows.shape == (3, 34112)
    assert torch.equal(windows[0], waveform[:34112])
    assert torch.equal(windows[1], waveform[31980 : 31980 + 34112])
    assert torch.equal(windows[2, : 80000 - 63960], waveform[63960:])  # the last window starts at 2 x 31980
    assert not windows[2, 80000 - 63960 :].any()  # padded with silence past the end


def test_batched_audio_encoding_matches_one_window_at_a_time(checkpoint) -> None:
    folder = checkpoint[0]
    batched = EmageMotionGenerator.from_pretrained(folder)
    one_by_one = EmageMotionGenerator.from_pretrained(folder)
    one_by_one.audio_batch_windows = 1
    waveform = speech_like(9.0, seed=3)
    first, second = batched(waveform), one_by_one(waveform)
    np.testing.assert_allclose(first.poses, second.poses, atol=1e-5)
    np.testing.assert_allclose(first.trans, second.trans, atol=1e-5)


def test_random_init_reads_the_config_files_only(checkpoint, tiny_emage_config) -> None:
    random = EmageMotionGenerator.random_init(checkpoint[0], seed=1)
    assert random.config == tiny_emage_config()
    loaded = checkpoint[1].state_dict()
    assert not torch.equal(random.audio_model.state_dict()["moton_proj.weight"], loaded["moton_proj.weight"])


@pytest.mark.gpu
def test_cuda_inference_matches_cpu(checkpoint, generator) -> None:
    on_gpu = EmageMotionGenerator.from_pretrained(checkpoint[0], device="cuda")
    waveform = speech_like(7.0, seed=5)
    # TF32 convolutions could flip an argmax between near-equal codebook logits.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gpu_motion = on_gpu(waveform)
    cpu_motion = generator(waveform)
    assert gpu_motion.poses.shape == cpu_motion.poses.shape == (210, 165)
    np.testing.assert_allclose(gpu_motion.poses, cpu_motion.poses, atol=1e-3)
    np.testing.assert_allclose(gpu_motion.trans, cpu_motion.trans, atol=1e-3)
