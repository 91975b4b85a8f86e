"""Dataset folder reading, window planning, cropping, cache and checkpoint files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from iasa.pose.synthetic_speaker import synthetic_speaker
from iasa.train.cache import CacheError, is_cached, list_cached
from iasa.train.checkpoint import find_resume_checkpoint, load_checkpoint, save_checkpoint
from iasa.train.config import DataConfig
from iasa.train.dataset import CropTransform, DatasetError, load_clip_keypoints, plan_windows, window_indices


def test_dwpose_dict_folder_reads_like_the_npz(tmp_path: Path) -> None:
    keypoints = synthetic_speaker(num_frames=4, image_size=(60, 80), seed=2)
    keypoints.save(tmp_path / "keypoints" / "a.npz")
    folder = tmp_path / "keypoints" / "b"
    folder.mkdir()
    for index, frame in enumerate(keypoints.to_dwpose_dicts()):
        as_lists = json.loads(json.dumps(frame, default=lambda array: array.tolist()))
        (folder / f"{index:05d}.json").write_text(json.dumps(as_lists))
    from_npz = load_clip_keypoints(tmp_path, "a", (60, 80))
    from_json = load_clip_keypoints(tmp_path, "b", (60, 80))
    for name in ("body", "body_score", "hands", "hands_score", "face", "face_score"):
        np.testing.assert_allclose(getattr(from_json, name), getattr(from_npz, name), atol=1e-6)
    with pytest.raises(DatasetError, match="no keypoints for clip 'c'"):
        load_clip_keypoints(tmp_path, "c", (60, 80))


def test_windows_fit_inside_the_video_and_do_not_overlap() -> None:
    config = DataConfig(num_frames=9, frame_stride=2, max_windows_per_video=10)
    assert plan_windows(16, "v", config) == []
    assert len(plan_windows(17, "v", config)) == 1
    windows = plan_windows(60, "v", config)
    frames = [window_indices(window, config) for window in windows]
    assert all(f[-1] < 60 and np.all(np.diff(f) == 2) and len(f) == 9 for f in frames)
    flat = [i for f in frames for i in f]
    assert len(flat) == len(set(flat)) and len(windows) == 3  # 0..16, 18..34, 36..52; 54..70 does not fit
    assert len(plan_windows(60, "v", DataConfig(num_frames=9, frame_stride=2, max_windows_per_video=2))) == 2


def test_crop_moves_keypoints_with_the_pixels() -> None:
    source = (90, 160)
    keypoints = synthetic_speaker(num_frames=1, image_size=source, seed=0)
    crop = CropTransform.centre(source, 64, 64)
    # Mark the nose in the source frame, crop the frame, find the mark again.
    nose = keypoints.body[0, 0] * np.array([source[1], source[0]])
    frame = np.zeros((1, *source, 3), np.uint8)
    frame[0, int(nose[1]) - 1 : int(nose[1]) + 2, int(nose[0]) - 1 : int(nose[0]) + 2] = 255
    cropped = crop.frames(frame)[0, ..., 0].astype(float)
    rows, cols = np.nonzero(cropped > 30)
    weights = cropped[rows, cols]
    found = np.array([np.average(cols, weights=weights), np.average(rows, weights=weights)])
    moved = crop.keypoints(keypoints)
    assert moved.image_size == (64, 64)
    np.testing.assert_allclose(moved.body[0, 0] * 64, found, atol=1.0)
    # Points pushed out of the crop lose their confidence.
    outside = moved.body_score[0][(moved.body[0] <= 0).any(-1) | (moved.body[0] >= 1).any(-1)]
    assert (outside == 0).all()


def test_a_half_written_window_is_not_cached(tmp_path: Path) -> None:
    (tmp_path / ".clip_w000.partial").mkdir()
    (tmp_path / ".clip_w000.partial" / "tensors.safetensors").write_bytes(b"x")
    assert not is_cached(tmp_path, "clip_w000")
    with pytest.raises(CacheError, match="run the data_process task"):
        list_cached(tmp_path)


def test_checkpoint_round_trip_restores_weights_optimiser_and_rng(tmp_path: Path) -> None:
    weight = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"w": weight}, {"optimizer": optimizer}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003"], "older checkpoints pruned, no partial folder left"
    expected = (torch.rand(4), random.random(), np.random.rand())
    saved_weight, saved_state = weight.detach().clone(), optimizer.state_dict()["state"][0]["exp_avg"].clone()

    with torch.no_grad():
        weight.add_(5)
    fresh = torch.optim.AdamW([weight], lr=0.1)
    path = find_resume_checkpoint(tmp_path, "auto")
    assert path.name == "step-00000003"
    assert load_checkpoint(path, {"w": weight}, {"optimizer": fresh}) == 3
    assert torch.equal(weight.detach(), saved_weight)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], saved_state)
    assert torch.equal(torch.rand(4), expected[0]) and random.random() == expected[1] and np.random.rand() == expected[2]
    assert find_resume_checkpoint(tmp_path, "none") is None
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        find_resume_checkpoint(tmp_path, str(tmp_path / "nowhere"))


def test_command_line_names_bad_tasks_and_keys() -> None:
    from iasa.config import ConfigError
    from iasa.train.tasks import main

    def never_built(config):  # the errors come before any model is built
        raise AssertionError("backbone built despite a bad config")

    with pytest.raises(ConfigError, match="task must be one of"):
        main(["--config", "config/train_sparseattn_lora.yaml", "task=finetune"], backbone_factory=never_built)
    with pytest.raises(ConfigError, match="unknown config key 'lora.rnak'"):
        main(["--config", "config/train_sparseattn_lora.yaml", "lora.rnak=4"], backbone_factory=never_built)
    with pytest.raises(ConfigError, match="unknown config key 'lora'"):
        main(["--config", "config/distill_dmd.yaml", "lora.rank=4"], backbone_factory=never_built)
