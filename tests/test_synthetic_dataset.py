"""The synthetic dataset: disjoint, seeded splits; files that the training reader reads back exactly
(lossless video = the render of the stored keypoints); gesture styles that change how a speaker moves."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from iasa.motion.procedural import LEFT_ELBOW, RIGHT_ELBOW, ProceduralMotionConfig, ProceduralMotionGenerator
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.synthetic.avatar import render_avatar
from iasa.synthetic.dataset import (
    SyntheticDatasetConfig,
    SyntheticDatasetError,
    clip_audio,
    clip_keypoints,
    identity_of_clip,
    plan_split,
    reference_keypoints,
)
from iasa.synthetic.gestures import GESTURE_STYLES, motion_config
from iasa.synthetic.identity import Identity
from iasa.synthetic.speech import synthesize_speech
from iasa.train.config import DataConfig
from iasa.train.dataset import list_videos, load_video_keypoints, plan_clips, read_frames, video_frame_count

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_synthetic_dataset.py"
_spec = importlib.util.spec_from_file_location("make_synthetic_dataset", SCRIPT)
make_synthetic_dataset = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_synthetic_dataset)
TINY = ["--train_clips", "3", "--heldout_clips", "2", "--identities_train", "2", "--identities_heldout", "1",
        "--frames", "9", "--size", "64", "--workers", "1"]  # fmt: skip
KEYPOINT_FIELDS = ("body", "body_score", "hands", "hands_score", "face", "face_score")


def make_dataset(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *TINY, *extra], capture_output=True, text=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    result = make_dataset(out, "--preview", str(out / "preview.png"))
    assert result.returncode == 0, result.stderr
    return out


def test_splits_are_seeded_and_disjoint() -> None:
    config = SyntheticDatasetConfig(train_clips=40, heldout_clips=12, identities_train=6, identities_heldout=3)
    train_people, train = plan_split(config, "train")
    heldout_people, heldout = plan_split(config, "heldout")
    assert plan_split(config, "train") == (train_people, train)
    assert {p.seed for p in train_people}.isdisjoint(p.seed for p in heldout_people)
    assert {p.name for p in train_people}.isdisjoint(p.name for p in heldout_people)
    assert {c.motion_seed for c in train}.isdisjoint(c.motion_seed for c in heldout)
    assert len({c.motion_seed for c in train}) == 40 and len({c.name for c in train}) == 40
    assert {c.identity for c in train} == set(train_people) and {c.identity for c in heldout} == set(heldout_people)
    assert len({c.style for c in train}) >= 4 and np.ptp([c.tempo for c in train]) > 2.0
    # The held-out split does not depend on how many training clips are asked for, and the seed matters.
    fewer_train = SyntheticDatasetConfig(train_clips=7, heldout_clips=12, identities_train=6, identities_heldout=3)
    assert plan_split(fewer_train, "heldout")[1] == heldout
    assert plan_split(SyntheticDatasetConfig(seed=1, train_clips=40, identities_train=6), "train")[1] != train


def test_written_split_reads_back_through_the_training_reader(written: Path) -> None:
    config = SyntheticDatasetConfig(
        train_clips=3, heldout_clips=2, identities_train=2, identities_heldout=1, frames=9, size=64
    )  # the sizes of TINY
    for split, count in (("train", 3), ("heldout", 2)):
        split_dir = written / split
        _, specs = plan_split(config, split)
        assert list_videos(split_dir) == sorted(spec.name for spec in specs) and len(specs) == count
        for spec in specs:
            frames, size = video_frame_count(split_dir / "videos" / f"{spec.name}.mp4")
            assert (frames, size) == (9, (64, 64))
            assert len(plan_clips(frames, spec.name, DataConfig(num_frames=9))) == 1
            keypoints = load_video_keypoints(split_dir, spec.name, size)
            expected = clip_keypoints(spec, clip_audio(spec, config), config)
            for field in KEYPOINT_FIELDS:
                np.testing.assert_array_equal(getattr(keypoints, field), getattr(expected, field))
            # The mp4 is lossless: its frames are the render of the stored keypoints, bit for bit.
            decoded = read_frames(split_dir / "videos" / f"{spec.name}.mp4", list(range(frames)))
            np.testing.assert_array_equal(decoded, render_avatar(keypoints, identity_of_clip(split_dir, spec.name)))
            audio, rate = soundfile.read(split_dir / "audio" / f"{spec.name}.wav", dtype="float32")
            assert rate == 16000 and len(audio) == round(9 / 30 * 16000)
            np.testing.assert_allclose(audio, clip_audio(spec, config), atol=1.0 / 32768)
            assert (split_dir / "prompts" / f"{spec.name}.txt").read_text().startswith("a cartoon person")


def test_manifest_and_reference_images(written: Path) -> None:
    train = json.loads((written / "train" / "manifest.json").read_text())
    heldout = json.loads((written / "heldout" / "manifest.json").read_text())
    assert set(train["identities"]).isdisjoint(heldout["identities"])
    train_motions = {clip["motion_seed"] for clip in train["clips"].values()}
    assert train_motions.isdisjoint(clip["motion_seed"] for clip in heldout["clips"].values())
    assert {c["identity"] for c in train["clips"].values()} <= set(train["identities"])
    config = SyntheticDatasetConfig(frames=9, size=64, train_clips=3, identities_train=2)
    people, _ = plan_split(config, "train")
    for person in people:
        entry = train["identities"][person.name]
        assert entry["seed"] == person.seed and entry["prompt"] == Identity.sample(person.seed).describe()
        image = cv2.cvtColor(cv2.imread(str(written / "train" / "identities" / f"{person.name}.png")), cv2.COLOR_BGR2RGB)
        keypoints = WholeBodyKeypoints.load(written / "train" / "identities" / f"{person.name}.npz")
        np.testing.assert_array_equal(keypoints.face, reference_keypoints(person, config).face)
        np.testing.assert_array_equal(image, render_avatar(keypoints, Identity.sample(person.seed))[0])
    preview = cv2.imread(str(written / "preview.png"))
    assert preview.shape == (64 * 3, 64 * 6, 3)  # 2 train + 1 held-out people, 5 frames + the pose overlay


def test_same_seed_same_dataset_and_refusals(written: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_synthetic_dataset.main(["--out", str(again), *TINY])
    for split in ("train", "heldout"):
        for video in sorted((written / split / "videos").glob("*.mp4")):
            name = video.stem
            first, second = (np.load(root / split / "keypoints" / f"{name}.npz") for root in (written, again))
            for field in KEYPOINT_FIELDS:
                np.testing.assert_array_equal(first[field], second[field])
            assert video.read_bytes() == (again / split / "videos" / video.name).read_bytes()
    with pytest.raises(SyntheticDatasetError, match="already holds files; choose another --out"):
        make_synthetic_dataset.main(["--out", str(again), *TINY])
    bad = make_dataset(tmp_path / "bad", "--frames", "10")  # the command line prints one line, no traceback
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --frames 10: use 4n + 1 frames (33, 49, 81), as the Wan VAE needs"
    ]
    assert not (tmp_path / "bad").exists()


def test_gesture_styles_change_how_the_hands_move() -> None:
    speech = synthesize_speech(4.0, seed=2)
    for style in GESTURE_STYLES:
        config = motion_config(style, seed=5)
        motion = ProceduralMotionGenerator(config)(speech)
        assert config.seed == 5 and motion.num_frames == 120 and np.isfinite(motion.poses).all()
    with pytest.raises(ValueError, match="unknown gesture style 'disco'"):
        motion_config("disco", 0)
    config = SyntheticDatasetConfig()
    spec = plan_split(config, "train")[1][0]
    speech = clip_audio(spec, config)
    heights = {
        style: clip_keypoints(replace(spec, style=style), speech, config).hands[..., 1].mean()  # image y grows down
        for style in ("hands_high", "neutral", "hands_low")
    }
    assert heights["hands_high"] < heights["neutral"] - 0.03 < heights["hands_low"] - 0.06


def test_beat_arm_weights_pick_the_beating_arm() -> None:
    speech = synthesize_speech(4.0, seed=3)

    def elbow_range(weights: tuple[float, float, float]) -> tuple[float, float]:
        motion = ProceduralMotionGenerator(ProceduralMotionConfig(beat_arm_weights=weights))(speech)
        return float(np.ptp(motion.poses[:, 3 * LEFT_ELBOW + 1])), float(np.ptp(motion.poses[:, 3 * RIGHT_ELBOW + 1]))

    left_only, right_only = elbow_range((1.0, 0.0, 0.0)), elbow_range((0.0, 1.0, 0.0))
    assert left_only[0] > 0.1 and left_only[1] < 1e-6
    assert right_only[1] > 0.1 and right_only[0] < 1e-6
