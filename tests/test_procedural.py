import numpy as np
import pytest

from iasa.motion.procedural import (
    JAW,
    LEFT_ELBOW,
    RIGHT_ELBOW,
    ProceduralMotionConfig,
    ProceduralMotionGenerator,
    detect_onsets,
    frame_loudness,
    smooth_envelope,
)
from iasa.pose.skeleton import BLINK_EXPRESSION_INDEX

SR = 16000


def syllables(seconds: float, onsets_s: list[float], burst_s: float = 0.18) -> np.ndarray:
    """Voiced bursts (a 150 Hz buzz) starting at ``onsets_s``, silence elsewhere."""
    time = np.arange(int(round(seconds * SR))) / SR
    envelope = np.zeros_like(time)
    for onset in onsets_s:
        inside = (time >= onset) & (time < onset + burst_s)
        envelope[inside] = np.sin(np.pi * (time[inside] - onset) / burst_s)
    return (0.5 * envelope * np.sign(np.sin(2 * np.pi * 150 * time))).astype(np.float32)


def jaw_angle(motion) -> np.ndarray:
    return motion.poses[:, 3 * JAW]


def elbow_bend(motion) -> np.ndarray:
    """Total elbow bend of both arms (left bends about -y, right about +y)."""
    return -motion.poses[:, 3 * LEFT_ELBOW + 1] + motion.poses[:, 3 * RIGHT_ELBOW + 1]


@pytest.mark.parametrize(("seconds", "frames"), [(0.1, 3), (2.13, 64), (1.0, 30), (0.01, 1)])
def test_length_is_round_duration_times_fps(seconds: float, frames: int) -> None:
    motion = ProceduralMotionGenerator()(syllables(seconds, [0.0]))
    assert motion.num_frames == frames and motion.fps == 30.0
    assert np.isfinite(motion.poses).all()


def test_same_audio_same_motion_and_seed_changes_it() -> None:
    audio = syllables(3.0, [0.3, 0.9, 1.6, 2.2])
    first, second = ProceduralMotionGenerator()(audio), ProceduralMotionGenerator()(audio)
    np.testing.assert_array_equal(first.poses, second.poses)
    np.testing.assert_array_equal(first.expressions, second.expressions)
    other = ProceduralMotionGenerator(ProceduralMotionConfig(seed=1))(audio)
    assert not np.allclose(other.poses, first.poses)


def test_jaw_opens_with_loudness_and_rests_in_silence() -> None:
    audio = syllables(2.0, [0.5])
    jaw = jaw_angle(ProceduralMotionGenerator()(audio))
    burst = slice(int(0.5 * 30) + 1, int(0.68 * 30))
    assert jaw[burst].max() > 0.15
    assert np.abs(jaw[:10]).max() < 1e-3 and np.abs(jaw[40:]).max() < 1e-3


def test_silence_gives_idle_motion_without_speech_gestures() -> None:
    motion = ProceduralMotionGenerator()(np.zeros(3 * SR, np.float32))
    assert motion.num_frames == 90
    assert not jaw_angle(motion).any()
    assert np.ptp(elbow_bend(motion)) < 1e-6  # no beats
    assert np.ptp(motion.poses[:, 3 * 15 : 3 * 15 + 3], axis=0).max() > 0.005  # the head still sways
    assert motion.expressions[:, BLINK_EXPRESSION_INDEX].max() > 0.9  # and the eyes blink


def test_onsets_are_found_at_the_syllables() -> None:
    onsets_s = [0.4, 1.1, 1.9, 2.5]
    config = ProceduralMotionConfig()

    frames = 90
    loudness = smooth_envelope(frame_loudness(syllables(3.0, onsets_s), frames, config), 2.0)
    found = detect_onsets(loudness, config) / 30
    assert len(found) == len(onsets_s)
    np.testing.assert_allclose(found, onsets_s, atol=0.1)


def test_arms_beat_after_onsets() -> None:
    onsets_s = [0.5, 1.5, 2.5]
    bend = elbow_bend(ProceduralMotionGenerator()(syllables(3.5, onsets_s)))
    rest = bend[:10].mean()
    for onset in onsets_s:
        window = bend[int(onset * 30) : int(onset * 30) + 15]
        assert window.max() > rest + 0.1  # a visible gesture within half a second of the onset


def test_blinks_are_brief_and_repeat() -> None:
    blink = ProceduralMotionGenerator()(np.zeros(12 * SR, np.float32)).expressions[:, BLINK_EXPRESSION_INDEX]
    closed = blink > 0.5
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 2 <= len(starts) <= 6  # one every 2-5 s
    assert closed.mean() < 0.1
