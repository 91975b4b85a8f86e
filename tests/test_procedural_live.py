"""The live procedural motion: causal with a stated look-ahead, independent of how the audio is cut, and close to
the offline motion where their rules agree."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from iasa.motion.motion_file import SmplxMotion
from iasa.motion.procedural import (
    ONSET_SMOOTHING_SIGMA,
    SAMPLE_RATE,
    LiveProceduralMotion,
    ProceduralMotionConfig,
    ProceduralMotionGenerator,
    detect_onsets,
    frame_loudness,
    smooth_envelope,
    smoothing_radius,
)
from iasa.pose.skeleton import BLINK_EXPRESSION_INDEX
from iasa.pose.synthetic_speaker import synthetic_speech
from tests.test_procedural import elbow_bend, jaw_angle, syllables

FPS = 30.0


def live_motion(waveform: np.ndarray, piece: int, finish: bool = True, config=None):
    """poses (T, 165), expressions (T, 100) and the generator after pushing `waveform` `piece` samples at a time."""
    live = LiveProceduralMotion(config)
    parts = [live.push(waveform[start : start + piece]) for start in range(0, len(waveform), piece)]
    if finish:
        parts.append(live.finish())
    return np.concatenate([p.poses for p in parts]), np.concatenate([p.expressions for p in parts]), live


def first_sample_of(frame: int) -> int:
    return int(np.round(frame * SAMPLE_RATE / FPS))


def test_the_look_ahead_is_the_smoothing_reach_plus_the_onset_peak():
    # The smoothing's reach, read off its impulse response: exactly this many frames each side are touched.
    impulse = np.zeros(41)
    impulse[20] = 1.0
    touched = np.flatnonzero(smooth_envelope(impulse, ONSET_SMOOTHING_SIGMA) > 0)
    assert (touched.min(), touched.max()) == (20 - 8, 20 + 8) == (20 - smoothing_radius(ONSET_SMOOTHING_SIGMA), 28)
    np.testing.assert_array_equal(smooth_envelope(impulse, 2.0), gaussian_filter1d(impulse, 2.0, mode="nearest"))
    assert LiveProceduralMotion().lookahead_frames == 8 + 1


@pytest.mark.parametrize("frame", [0, 5, 8, 9, 10, 23, 40])
def test_a_frame_is_final_exactly_lookahead_frames_after_its_audio(frame):
    """After the audio through the end of frame k, frames 0..k - 9 are final; one sample short, one fewer."""
    speech = synthetic_speech(3.0, seed=1)
    through = first_sample_of(frame + 1)
    assert LiveProceduralMotion().push(speech[:through]).num_frames == max(0, frame + 1 - 9)
    assert LiveProceduralMotion().push(speech[: through - 1]).num_frames == max(0, frame - 9)


def test_a_prefix_gives_the_frames_of_every_continuation():
    """The frames the first 2 s make final are those of the whole audio, whatever follows, even a shout that
    changes the offline motion's loudness scale (and its onsets) from the first frame on."""
    speech = synthetic_speech(4.0, seed=2)
    split = 2 * SAMPLE_RATE
    shout = speech.copy()
    shout[split:] = np.clip(4 * shout[split:], -1, 1)
    silence = speech.copy()
    silence[split:] = 0.0
    prefix, _, _ = live_motion(speech[:split], piece=1000, finish=False)
    assert len(prefix) == 60 - 9
    for continuation in (speech, shout, silence):
        whole, _, _ = live_motion(continuation, piece=1000)
        np.testing.assert_allclose(whole[: len(prefix)], prefix, atol=1e-6, rtol=0)
    # the offline motion is not causal: the shout changes its jaw over the first 2 s
    offline_speech, offline_shout = (jaw_angle(ProceduralMotionGenerator()(w))[:51] for w in (speech, shout))
    assert np.abs(offline_speech - offline_shout).max() > 0.01


def test_the_audio_pieces_do_not_change_the_motion():
    speech = synthetic_speech(2.5, seed=4)
    poses, expressions, _ = live_motion(speech, piece=len(speech))
    for piece in (1, 7, 533, 534, 2133, 16000):
        other_poses, other_expressions, _ = live_motion(speech, piece)
        np.testing.assert_array_equal(other_poses, poses)
        np.testing.assert_array_equal(other_expressions, expressions)


@pytest.mark.parametrize("samples", [0, 1, 266, 267, 533, 534, 16000, 16001, 34080, 34133, 100_000])
def test_as_many_frames_as_the_offline_motion(samples):
    audio = np.random.default_rng(samples).normal(scale=0.1, size=samples).astype(np.float32)
    poses, expressions, _ = live_motion(audio, piece=1000)
    assert len(poses) == len(expressions) == ProceduralMotionGenerator()(audio).num_frames
    assert np.isfinite(poses).all()


def test_onsets_of_separate_syllables_are_the_offline_onsets():
    onsets_s = [0.4, 1.1, 1.9, 2.5, 3.3]
    audio = syllables(4.0, onsets_s)
    _, _, live = live_motion(audio, piece=2133)
    config = ProceduralMotionConfig()
    offline = detect_onsets(smooth_envelope(frame_loudness(audio, 120, config), 2.0), config)
    assert list(live.onsets) == offline.tolist()
    np.testing.assert_allclose(np.array(live.onsets) / FPS, onsets_s, atol=0.1)


def test_a_weak_onset_just_before_a_strong_one_is_taken_live():
    """Within onset_min_gap_s the offline rule keeps the stronger rise; the live one cannot wait for it."""
    audio = syllables(2.0, [0.5]) * 0.15 + syllables(2.0, [0.72])
    _, _, live = live_motion(audio, piece=2133)
    config = ProceduralMotionConfig()
    offline = detect_onsets(smooth_envelope(frame_loudness(audio, 60, config), 2.0), config)
    assert len(live.onsets) == len(offline) == 1
    assert live.onsets[0] < offline[0]
    assert abs(live.onsets[0] - 0.5 * FPS) <= 3 and abs(offline[0] - 0.72 * FPS) <= 3


def test_once_the_loudest_frame_has_passed_the_jaw_is_the_offline_jaw():
    """The running maximum is the clip's maximum from the loudest frame on: from there (plus the jaw smoothing's
    3 frames) the jaw opening equals the offline one; before it, the live jaw opens wider."""
    speech = synthetic_speech(5.0, seed=6)
    speech[: 2 * SAMPLE_RATE] *= 0.3  # the loudest frame comes after 2 s
    poses, _, _ = live_motion(speech, piece=2133)
    offline = ProceduralMotionGenerator()(speech)
    loudest = int(np.argmax(frame_loudness(speech, offline.num_frames, ProceduralMotionConfig())))
    assert loudest > 60
    live_jaw, offline_jaw = poses[:, 66], jaw_angle(offline)
    np.testing.assert_allclose(live_jaw[loudest + 3 :], offline_jaw[loudest + 3 :], atol=1e-5)
    assert live_jaw[:60].mean() > 1.2 * offline_jaw[:60].mean()


def test_silence_gives_idle_motion_and_blinks():
    poses, expressions, _ = live_motion(np.zeros(8 * SAMPLE_RATE, np.float32), piece=2133)
    assert len(poses) == 240
    assert not poses[:, 66].any()
    assert np.ptp(-poses[:, 3 * 18 + 1] + poses[:, 3 * 19 + 1]) < 1e-6  # no beats
    assert np.ptp(poses[:, 45:48], axis=0).max() > 0.005  # the head sways
    closed = expressions[:, BLINK_EXPRESSION_INDEX] > 0.5
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 2 <= len(starts) <= 4 and closed.mean() < 0.1  # a blink every 2-5 s


def test_arms_beat_after_the_onsets_and_the_seed_changes_the_motion():
    onsets_s = [0.5, 1.5, 2.5]
    audio = syllables(3.5, onsets_s)
    poses, _, _ = live_motion(audio, piece=2133)
    bend = elbow_bend(SmplxMotion(poses, np.zeros((len(poses), 100)), np.zeros((len(poses), 3)), np.zeros(300)))
    for onset in onsets_s:
        window = bend[int(onset * 30) : int(onset * 30) + 15]
        assert window.max() > bend[:10].mean() + 0.1
    other, _, _ = live_motion(audio, piece=2133, config=ProceduralMotionConfig(seed=1))
    assert not np.allclose(other, poses)


def test_push_after_finish_is_refused():
    live = LiveProceduralMotion()
    live.push(np.zeros(1000, np.float32))
    live.finish()
    with pytest.raises(ValueError, match="new LiveProceduralMotion"):
        live.push(np.zeros(10, np.float32))
