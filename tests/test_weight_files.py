"""Damaged, inconsistent and crafted weight files are errors that name the file, through the real loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from crafted_files import CodeRunner
from iasa.tensor_files import IncompleteFileError, TensorFileError, non_finite_tensors, read_tensors
from iasa.video import model_files
from iasa.video.assembly import load_wan_components
from iasa.video.lora import apply_unianimate_checkpoint, inject_lora, load_lora, save_lora
from iasa.video.config import VideoModelConfig
from iasa.video.model_files import dit_shard_name
from iasa.video.pose_guider import PoseGuider
from wan_folders import SHARDS, tiny_config, write_tiny_wan_folder

RANDOM = VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wan") / "Wan2.1-I2V-14B-720P"
    write_tiny_wan_folder(folder)
    return folder


def linked_copy(folder: Path, target: Path, replaced: tuple[str, ...]) -> Path:
    """target/ with every file of folder linked, except the replaced ones, which are real copies to edit."""
    target.mkdir()
    for path in folder.iterdir():
        if path.name in replaced:
            shutil.copy(path, target / path.name)
        else:
            (target / path.name).symlink_to(path)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name", [dit_shard_name(2, SHARDS), model_files.VAE])
def test_a_truncated_file_is_named_as_incomplete(tiny_folder: Path, tmp_path: Path, name: str) -> None:
    copy = linked_copy(tiny_folder, tmp_path / "copy", (name,))
    truncate(copy / name)
    with pytest.raises(IncompleteFileError) as error:
        load_wan_components(tiny_config(copy))
    assert str(copy / name) in str(error.value) and "incomplete" in str(error.value)


@pytest.mark.parametrize("name", [dit_shard_name(4, SHARDS), model_files.IMAGE_ENCODER])
def test_nan_in_a_weight_is_named_with_file_and_tensor(tiny_folder: Path, tmp_path: Path, name: str) -> None:
    copy = linked_copy(tiny_folder, tmp_path / "copy", (name,))
    path = copy / name
    tensors = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    key = sorted(key for key, value in tensors.items() if value.numel() > 4)[0]
    tensors[key].view(-1)[3] = float("nan")
    save_file(tensors, str(path)) if path.suffix == ".safetensors" else torch.save(tensors, path)
    with pytest.raises(TensorFileError) as error:
        load_wan_components(tiny_config(copy))
    assert str(path) in str(error.value) and key in str(error.value) and "NaN or infinite" in str(error.value)


def test_a_key_in_two_shards_is_an_error(tiny_folder: Path, tmp_path: Path) -> None:
    first, second = dit_shard_name(1, SHARDS), dit_shard_name(2, SHARDS)
    copy = linked_copy(tiny_folder, tmp_path / "copy", (second,))
    stray_key = sorted(load_file(str(tiny_folder / first)))[0]
    extra = load_file(str(copy / second))
    extra[stray_key] = torch.zeros_like(load_file(str(tiny_folder / first))[stray_key])
    save_file(extra, str(copy / second))
    with pytest.raises(TensorFileError) as error:
        load_wan_components(tiny_config(copy))
    assert stray_key in str(error.value) and first in str(error.value) and second in str(error.value)


def test_the_index_decides_which_shard_holds_a_key(tiny_folder: Path, tmp_path: Path) -> None:
    """A key moved to another shard than the index names is an error, not a silent choice."""
    first, second = dit_shard_name(1, SHARDS), dit_shard_name(2, SHARDS)
    copy = linked_copy(tiny_folder, tmp_path / "copy", (first, second))
    source, target = load_file(str(copy / first)), load_file(str(copy / second))
    moved = sorted(source)[0]
    target[moved] = source.pop(moved)
    save_file(source, str(copy / first))
    save_file(target, str(copy / second))
    with pytest.raises(TensorFileError) as error:
        load_wan_components(tiny_config(copy))
    assert moved in str(error.value) and model_files.DIT_INDEX in str(error.value)
    # With the index updated to the new place, the same files load, the moved key with its own value.
    index = json.loads((tiny_folder / model_files.DIT_INDEX).read_text())
    index["weight_map"][moved] = second
    (copy / model_files.DIT_INDEX).unlink()
    (copy / model_files.DIT_INDEX).write_text(json.dumps(index))
    dit = load_wan_components(tiny_config(copy), parts=("dit",)).dit
    assert torch.equal(dit.state_dict()[moved], target[moved])


def test_a_crafted_pytorch_file_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    checkpoint = tmp_path / "UniAnimate-Wan2.1-14B-Lora-12000.ckpt"
    torch.save({"pipe.dit.blocks.0.self_attn.q.lora_A.default.weight": CodeRunner(marker)}, checkpoint)
    dit = load_wan_components(RANDOM, parts=("dit",)).dit
    with pytest.raises(TensorFileError, match="would run code") as error:
        apply_unianimate_checkpoint(checkpoint, dit, PoseGuider(dit_dim=dit.dim))
    assert str(checkpoint) in str(error.value)
    assert not marker.exists()


def test_a_truncated_lora_file_is_named(tmp_path: Path) -> None:
    dit = load_wan_components(RANDOM, parts=("dit",)).dit
    path = tmp_path / "lora.safetensors"
    save_lora(path, inject_lora(dit, rank=2, alpha=2), pose_style="unianimate")
    truncate(path, keep=0.9)
    with pytest.raises(IncompleteFileError, match="lora.safetensors is incomplete"):
        load_lora(path, load_wan_components(RANDOM, parts=("dit",)).dit)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_non_finite_check_agrees_with_isfinite(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(1000 + 37 * i, generator=generator).to(dtype) for i in range(12)}
    tensors["ids"] = torch.arange(5)  # integer tensors are not checked
    tensors["empty"] = torch.zeros(0, dtype=dtype)
    for index, (position, bad) in enumerate([(0, float("nan")), (999, float("inf")), (517, float("-inf"))]):
        tensors[f"t{3 * index + 1}"][position] = bad
    expected = [name for name, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    assert non_finite_tensors(tensors) == expected == ["t1", "t4", "t7"]


def test_pickled_state_dict_wrappers_are_unwrapped_and_non_tensors_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(read_tensors(path)["w"], torch.ones(2))
    torch.save({"w": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(TensorFileError, match="not tensors: \\['epoch'\\]"):
        read_tensors(path)
