"""The synthetic speaker: speech-like audio through the procedural motion and the keypoint path."""

import numpy as np
import pytest

from iasa.motion.procedural import SAMPLE_RATE, ProceduralMotionConfig, frame_loudness
from iasa.pose.keypoints import BODY_NAMES
from iasa.pose.synthetic_speaker import synthetic_speaker, synthetic_speech


@pytest.mark.parametrize("fps", [30.0, 25.0, 16.0])
@pytest.mark.parametrize("frames", [1, 5, 12, 81])
def test_exactly_the_frames_asked_for(frames, fps):
    keypoints = synthetic_speaker(frames, (48, 64), seed=1, fps=fps)
    assert keypoints.num_frames == frames and keypoints.image_size == (48, 64)
    keypoints.validate()


def test_seeded():
    first, again, other = (synthetic_speaker(9, (64, 64), seed=seed) for seed in (3, 3, 4))
    for name in ("body", "body_score", "hands", "hands_score", "face", "face_score"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.hands, other.hands)


def test_speech_is_syllables_in_phrases():
    waveform = synthetic_speech(10.0, seed=0)
    assert waveform.shape == (10 * SAMPLE_RATE,) and waveform.dtype == np.float32
    windows = waveform.reshape(-1, SAMPLE_RATE // 100)  # 10 ms
    voiced = np.sqrt((windows.astype(np.float64) ** 2).mean(1)) > 1e-3
    edges = np.flatnonzero(np.diff(voiced.astype(int)))
    syllables = int(voiced[0]) + int((np.diff(voiced.astype(int)) == 1).sum())
    assert 2.5 < syllables / 10 < 4.5
    assert np.diff(edges).max() >= 30  # at least one pause of 0.3 s between phrases


def test_the_mouth_follows_the_loudness_of_the_speech():
    frames = 150
    keypoints = synthetic_speaker(frames, (512, 512), seed=2)
    loudness = frame_loudness(synthetic_speech(frames / 30.0, seed=2), frames, ProceduralMotionConfig())
    face_width = np.linalg.norm(keypoints.face[:, 0] - keypoints.face[:, 16], axis=-1)
    opening = np.linalg.norm(keypoints.face[:, 62] - keypoints.face[:, 66], axis=-1) / face_width  # inner lips
    assert np.corrcoef(opening, loudness)[0, 1] > 0.9
    assert opening[loudness > 0.5].mean() > 2 * opening[loudness == 0].mean()


def test_an_upper_body_shot():
    keypoints = synthetic_speaker(81, (720, 1280), seed=0)
    visible = keypoints.body_score.min(0) > 0
    upper = ("nose", "neck", "right_shoulder", "left_shoulder", "right_elbow", "left_elbow", "right_eye", "left_eye")
    assert all(visible[BODY_NAMES.index(name)] for name in upper)
    assert not visible[BODY_NAMES.index("right_knee")] and not visible[BODY_NAMES.index("left_ankle")]
    assert (keypoints.face_score == 1).all()
    # Pinned: every benchmark layout and test clip comes from here; a change shows up first in these values.
    np.testing.assert_allclose(keypoints.body[40, BODY_NAMES.index("nose")], [0.51697, 0.18881], atol=1e-4)
    np.testing.assert_allclose(keypoints.body[40, BODY_NAMES.index("right_wrist")], [0.38242, 0.79169], atol=1e-4)
