"""Dataset folder reading, training clip planning, cropping, cache and checkpoint files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from iasa.attention.config import LayoutRuleConfig
from iasa.attention.layout import SparseLayout
from iasa.pose.synthetic_speaker import synthetic_speaker
from iasa.train.cache import CacheError, is_cached, list_cached, read_clip, write_clip, write_negative_context
from iasa.train.checkpoint import find_resume_checkpoint, load_checkpoint, save_checkpoint
from iasa.train.config import DataConfig
from iasa.train.dataset import CropTransform, DatasetError, load_video_keypoints, plan_clips, clip_frame_indices


def test_dwpose_dict_folder_reads_like_the_npz(tmp_path: Path) -> None:
    keypoints = synthetic_speaker(num_frames=4, image_size=(60, 80), seed=2)
    keypoints.save(tmp_path / "keypoints" / "a.npz")
    folder = tmp_path / "keypoints" / "b"
    folder.mkdir()
    for index, frame in enumerate(keypoints.to_dwpose_dicts()):
        as_lists = json.loads(json.dumps(frame, default=lambda array: array.tolist()))
        (folder / f"{index:05d}.json").write_text(json.dumps(as_lists))
    from_npz = load_video_keypoints(tmp_path, "a", (60, 80))
    from_json = load_video_keypoints(tmp_path, "b", (60, 80))
    for name in ("body", "body_score", "hands", "hands_score", "face", "face_score"):
        np.testing.assert_allclose(getattr(from_json, name), getattr(from_npz, name), atol=1e-6)
    with pytest.raises(DatasetError, match="no keypoints for video 'c'"):
        load_video_keypoints(tmp_path, "c", (60, 80))


def test_clips_fit_inside_the_video_and_do_not_overlap() -> None:
    config = DataConfig(num_frames=9, frame_stride=2, max_clips_per_video=10)
    assert plan_clips(16, "v", config) == []
    assert len(plan_clips(17, "v", config)) == 1
    clips = plan_clips(60, "v", config)
    frames = [clip_frame_indices(clip, config) for clip in clips]
    assert all(f[-1] < 60 and np.all(np.diff(f) == 2) and len(f) == 9 for f in frames)
    flat = [i for f in frames for i in f]
    assert len(flat) == len(set(flat)) and len(clips) == 3  # 0..16, 18..34, 36..52; 54..70 does not fit
    assert len(plan_clips(60, "v", DataConfig(num_frames=9, frame_stride=2, max_clips_per_video=2))) == 2


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


def test_a_half_written_clip_is_not_cached(tmp_path: Path) -> None:
    (tmp_path / ".clip_w000.partial").mkdir()
    (tmp_path / ".clip_w000.partial" / "tensors.safetensors").write_bytes(b"x")
    assert not is_cached(tmp_path, "clip_w000")
    with pytest.raises(CacheError, match="run the data_process task"):
        list_cached(tmp_path)


def test_cached_layouts_keep_every_field_and_the_rule(tmp_path: Path) -> None:
    """Layouts go through SparseLayout.state into the cache and come back whole (block size and region names
    too), with the rule they were built with; moving the batch keeps them whole."""
    keypoints = synthetic_speaker(num_frames=9, image_size=(32, 32), seed=1)
    regions = torch.tensor([[0, 1, 2, 0], [1, 1, 0, 2], [2, 0, 1, 1]])
    layouts = {
        "past": SparseLayout(torch.eye(3, dtype=torch.bool) | torch.ones(3, 3, dtype=torch.bool).tril(), regions, (2, 2), 16, ("face", "arms")),
        "both": SparseLayout(torch.ones(3, 3, dtype=torch.bool), regions.flip(0), (2, 2), 16, ("face", "arms")),
    }
    rule = LayoutRuleConfig(top_k=2, regions=("face", "arms"), limb_width=0.3, block_size=16)
    tensors = {"latents": torch.randn(16, 3, 4, 4), "y": torch.randn(20, 3, 4, 4), "clip_feature": torch.randn(257, 8),
               "context": torch.randn(5, 8), "pose_video": torch.zeros(3, 9, 32, 32, dtype=torch.uint8),
               "reference_pose": torch.zeros(3, 32, 32, dtype=torch.uint8)}  # fmt: skip
    write_negative_context(tmp_path, torch.randn(1, 5, 8))
    write_clip(tmp_path, "v_w000", tensors, layouts, keypoints, "a prompt", rule, "face")
    batch = read_clip(tmp_path, "v_w000").to("cpu", torch.float64)
    assert batch.layout_rule == rule
    for direction, layout in layouts.items():
        cached = batch.layouts[direction]
        assert torch.equal(cached.frame_selection, layout.frame_selection) and torch.equal(cached.token_regions, layout.token_regions)
        assert (cached.grid_size, cached.block_size, cached.region_names) == ((2, 2), 16, ("face", "arms"))
    assert batch.latents.dtype == torch.float64 and torch.allclose(batch.latents[0].float(), tensors["latents"])


def test_a_clip_cached_without_layout_metadata_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "v_w000"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"name": "v_w000", "prompt": "", "grid_size": [2, 2], "directions": ["past"]}))
    write_negative_context(tmp_path, torch.randn(1, 5, 8))
    with pytest.raises(CacheError, match="earlier version.*rerun data_process"):
        read_clip(tmp_path, "v_w000")


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

    def never_built(config):  # the errors come before any network is built
        raise AssertionError("networks built despite a bad config")

    with pytest.raises(ConfigError, match="task must be one of"):
        main(["--config", "config/train_sparseattn_lora.yaml", "task=finetune"], components_factory=never_built)
    with pytest.raises(ConfigError, match="unknown config key 'lora.rnak'"):
        main(["--config", "config/train_sparseattn_lora.yaml", "lora.rnak=4"], components_factory=never_built)
    with pytest.raises(ConfigError, match="unknown config key 'lora'"):
        main(["--config", "config/distill_dmd.yaml", "lora.rank=4"], components_factory=never_built)
