"""Tiny Wan2.1-I2V checkpoints in the official file layout are found and loaded by the real loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from iasa.video import model_files
from iasa.video.assembly import CheckpointKeyError, load_from_files, load_wan_components
from iasa.video.config import ARCHITECTURES
from iasa.video.model_files import ModelFilesError, dit_shard_name
from wan_folders import SHARDS, TINY, tiny_config, write_tiny_wan_folder

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("wan") / "Wan2.1-I2V-14B-720P"
    return folder, write_tiny_wan_folder(folder)


def test_loads_every_network_with_the_written_weights(tiny_folder):
    folder, written = tiny_folder
    components = load_wan_components(tiny_config(folder))
    for name, value in components.dit.state_dict().items():
        torch.testing.assert_close(value, written["dit"][name], rtol=0, atol=0)
    for name, value in components.text_encoder.state_dict().items():
        torch.testing.assert_close(value, written["text_encoder"][name].float(), rtol=0, atol=0)
    for name, value in components.vae.model.state_dict().items():
        torch.testing.assert_close(value, written["vae"][name], rtol=0, atol=0)
    for name, value in components.image_encoder.model.state_dict().items():
        torch.testing.assert_close(value, written["image_encoder"][name], rtol=0, atol=0)
    ids, mask = components.tokenizer("a person is dancing", return_mask=True)
    assert ids[0, :4].tolist() == [3, 4, 5, 2] and mask[0].tolist() == [1, 1, 1, 1] + [0] * (TINY.text_length - 4)


def test_missing_shard_is_named_with_the_folder(tiny_folder, tmp_path):
    folder, _ = tiny_folder
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        if path.name != dit_shard_name(3, SHARDS):
            (copy / path.name).symlink_to(path)
    with pytest.raises(ModelFilesError) as error:
        load_wan_components(tiny_config(copy))
    assert dit_shard_name(3, SHARDS) in str(error.value) and str(copy.resolve()) in str(error.value)
    assert dit_shard_name(2, SHARDS) not in str(error.value)


def test_missing_files_are_all_listed(tmp_path):
    (tmp_path / dit_shard_name(1, 2)).write_bytes(b"")
    with pytest.raises(ModelFilesError) as error:
        load_wan_components(tiny_config(tmp_path))
    message = str(error.value)
    for name in (dit_shard_name(2, 2), model_files.TEXT_ENCODER, model_files.VAE, model_files.IMAGE_ENCODER, model_files.TOKENIZER):
        assert name in message


def test_checkpoint_of_another_size_is_rejected(tiny_folder):
    folder, _ = tiny_folder
    wider = dataclasses.replace(TINY, dim=128, num_heads=4, ffn_dim=256)
    shards = model_files.locate_model_files(folder).dit_shards
    with pytest.raises(CheckpointKeyError, match="model_size"):
        load_from_files("dit", shards, wider, torch.device("cpu"), torch.float32)


def test_missing_key_is_named(tiny_folder, tmp_path):
    folder, written = tiny_folder
    shard = folder / dit_shard_name(1, SHARDS)
    tensors = load_file(str(shard))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, str(tmp_path / shard.name))
    shards = [tmp_path / shard.name, *model_files.locate_model_files(folder).dit_shards[1:]]
    with pytest.raises(CheckpointKeyError, match=dropped.replace(".", r"\.")):
        load_from_files("dit", shards, TINY, torch.device("cpu"), torch.float32)


# diffsynth's registered key-and-shape hashes (diffsynth/configs/model_configs.py) of the official files:
# the I2V-14B DiT shards, models_t5_umt5-xxl-enc-bf16.pth and Wan2.1_VAE.pth.
OFFICIAL_FILE_HASHES = {
    "dit": "6bfcfb3b342cb286ce886889d519a77e",
    "text_encoder": "9c8818c2cbea55eca56c7b447df170da",
    "vae": "ccc42284ea13e1ad04693284c7a09be6",
}


@pytest.mark.parametrize("part", sorted(OFFICIAL_FILE_HASHES))
def test_14b_networks_have_the_official_key_names_and_shapes(part):
    """Built without weights (meta tensors): the 14B preset expects exactly the official files' keys."""
    from diffsynth.core.loader.file import hash_state_dict_keys
    from diffsynth.core.vram.initialization import skip_model_initialization

    from iasa.video.assembly import BUILDERS

    with skip_model_initialization():
        network = BUILDERS[part](ARCHITECTURES["14b"])
    state_dict = network.model.state_dict() if part == "vae" else network.state_dict()  # file keys lack "model."
    assert hash_state_dict_keys(state_dict, with_shape=True) == OFFICIAL_FILE_HASHES[part]
