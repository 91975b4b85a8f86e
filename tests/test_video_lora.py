"""LoRA files round trip, UniAnimate's checkpoint (LoRA merged + pose guider), pose guider key names and shapes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors import safe_open
from safetensors.torch import save_file

from iasa.pose.style import PoseStyleError
from iasa.video.assembly import CheckpointKeyError
from iasa.video.attention_patch import patch_self_attention
from iasa.video.config import (
    ARCHITECTURES,
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    AttentionPatchConfig,
    LongVideoConfig,
    VideoModelConfig,
)
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.lora import apply_unianimate_checkpoint, inject_lora, load_lora, lora_pose_style, save_lora
from iasa.video.model_files import ModelFilesError
from iasa.video.pipeline import VideoGenerator
from iasa.video.pose_guider import PoseGuider

TINY = ARCHITECTURES["tiny"]


def flow(dit) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 16, 2, 4, 4, generator=generator)
    context = torch.randn(1, TINY.text_length, TINY.text_dim, generator=generator)
    clip_feature = torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM, generator=generator)
    y = torch.randn(1, CONDITION_CHANNELS, 2, 4, 4, generator=generator)
    patch_self_attention(dit)
    with torch.no_grad():
        return predict_flow(dit, latents, torch.tensor([500.0]), FlowConditions(context, clip_feature, y, None))


def randomize_lora(dit, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in dit.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def test_lora_file_round_trip(tmp_path, tiny_dit):
    trained = inject_lora(tiny_dit(), rank=3, alpha=6)
    randomize_lora(trained, seed=1)
    path = tmp_path / "lora" / "student.safetensors"
    save_lora(path, trained, pose_style="face")
    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    assert "blocks.0.self_attn.q.lora_A.weight" in keys and "blocks.1.ffn.2.lora_B.weight" in keys
    assert metadata["rank"] == "3" and float(metadata["alpha"]) == 6
    # The pose images it was trained on: the style and UniAnimate's reversed channel order.
    assert metadata["pose_style"] == "face" and metadata["pose_channel_order"] == "bgr"
    assert lora_pose_style(path) == "face"
    loaded = load_lora(path, tiny_dit())
    torch.testing.assert_close(flow(loaded), flow(trained), rtol=0, atol=0)
    assert not torch.allclose(flow(loaded), flow(tiny_dit()), atol=1e-4)
    assert not list(tmp_path.glob("lora/.*")), "temporary files left behind"


def test_lora_file_for_another_adapter_shape_is_rejected(tmp_path, tiny_dit):
    path = tmp_path / "narrow.safetensors"
    save_lora(path, inject_lora(tiny_dit(), rank=2, alpha=2, target_modules=("q",)), pose_style="unianimate")
    with pytest.raises(CheckpointKeyError, match=r"trained with LoRA targets \['q'\]"):
        load_lora(path, inject_lora(tiny_dit(), rank=2, alpha=2))
    # The scale alone differs: the file's update would be applied at another strength.
    with pytest.raises(CheckpointKeyError, match=r"alpha 2.0 \(the adapter has 4.0\)"):
        load_lora(path, inject_lora(tiny_dit(), rank=2, alpha=4, target_modules=("q",)))


def rewrite_metadata(path, changes: dict[str, str | None]) -> None:
    """The file with its metadata entries changed (None removes one), as another writer would have left it."""
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = dict(handle.metadata()), {key: handle.get_tensor(key) for key in handle.keys()}
    for key, value in changes.items():
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
    save_file(tensors, str(path), metadata=metadata)


def test_lora_files_without_a_pose_style_or_with_another_channel_order(tmp_path, tiny_dit):
    path = tmp_path / "lora.safetensors"
    save_lora(path, inject_lora(tiny_dit(), rank=2, alpha=2), pose_style="unianimate")
    assert lora_pose_style(path) == "unianimate"
    rewrite_metadata(path, {"pose_style": None, "pose_channel_order": None})  # written before styles were recorded
    assert lora_pose_style(path) is None
    load_lora(path, tiny_dit())
    rewrite_metadata(path, {"pose_style": "face", "pose_channel_order": "rgb"})
    with pytest.raises(PoseStyleError, match="channel order 'rgb'"):
        load_lora(path, tiny_dit())
    rewrite_metadata(path, {"pose_style": "sketch", "pose_channel_order": "bgr"})
    with pytest.raises(PoseStyleError, match="sketch"):
        lora_pose_style(path)


def test_pose_net_keys_are_unianimates():
    keys = set(PoseGuider(dit_dim=TINY.dim).state_dict())
    expected = {f"dwpose_embedding.{i}.{p}" for i in range(0, 13, 2) for p in ("weight", "bias")}
    expected |= {f"randomref_embedding_pose.{i}.{p}" for i in range(0, 11, 2) for p in ("weight", "bias")}
    assert keys == expected


def test_pose_guider_maps_to_the_token_grid():
    guider = PoseGuider(dit_dim=TINY.dim)
    with torch.no_grad():
        features = guider.pose_features(torch.rand(1, 3, 81, 64, 96))
        reference = guider.reference_condition(torch.rand(1, 3, 64, 96))
    assert features.shape == (1, TINY.dim, 21, 4, 6)  # 21 latent frames, H/16 x W/16 tokens
    assert reference.shape == (1, CONDITION_CHANNELS, 1, 8, 12)  # H/8 x W/8, broadcast over frames


def test_unianimate_checkpoint_merges_lora_and_loads_the_pose_guider(tmp_path, tiny_dit, write_unianimate_checkpoint):
    rank = 4
    # The expected model: peft's own forward with UniAnimate's adapter (alpha = rank -> update = B A).
    with_adapter = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["q", "k", "v", "o", "ffn.0", "ffn.2"]), tiny_dit()
    )
    randomize_lora(with_adapter, seed=2)
    adapter = get_peft_model_state_dict(with_adapter)
    torch.manual_seed(3)
    source_guider = PoseGuider(dit_dim=TINY.dim)
    path = tmp_path / "UniAnimate-Wan2.1-14B-Lora-12000.ckpt"
    write_unianimate_checkpoint(path, adapter, source_guider)

    merged, guider = tiny_dit(), PoseGuider(dit_dim=TINY.dim)
    apply_unianimate_checkpoint(path, merged, guider, lora_strength=1.0)
    torch.testing.assert_close(flow(merged), flow(with_adapter), rtol=1e-4, atol=1e-5)
    for name, value in guider.state_dict().items():
        torch.testing.assert_close(value, source_guider.state_dict()[name], rtol=0, atol=0)


def test_unianimate_checkpoint_with_unknown_keys_is_rejected(tmp_path, tiny_dit):
    path = tmp_path / "other.ckpt"
    torch.save({"model.blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointKeyError, match="neither DiT LoRA nor pose guider"):
        apply_unianimate_checkpoint(path, tiny_dit(), PoseGuider(dit_dim=TINY.dim))


def test_generation_uses_the_trained_pose_guider(tmp_path):
    """model.pose_guider_path: the train stage's pose_guider.safetensors replaces UniAnimate's guider."""
    torch.manual_seed(4)
    trained = PoseGuider(dit_dim=TINY.dim)
    path = tmp_path / "pose_guider.safetensors"
    save_file({key: value.contiguous() for key, value in trained.state_dict().items()}, str(path))
    model = VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu")
    generator = VideoGenerator.from_config(
        dataclasses.replace(model, pose_guider_path=str(path)), AttentionPatchConfig(), LongVideoConfig()
    )
    for name, value in generator.components.pose_guider.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name]), name
    with pytest.raises(ModelFilesError, match="pose_guider_path"):
        VideoGenerator.from_config(
            dataclasses.replace(model, pose_guider_path=str(tmp_path / "none.safetensors")), AttentionPatchConfig(), LongVideoConfig()
        )


def test_a_missing_lora_file_says_how_to_make_one(tmp_path, tiny_dit):
    with pytest.raises(ModelFilesError, match="train_iasa.py"):
        load_lora(tmp_path / "student.safetensors", tiny_dit())
