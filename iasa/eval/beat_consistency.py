"""Beat consistency (BC) between speech and gesture, as defined by EMAGE's emage_evaltools.

Audio beats are librosa onsets. Motion beats are local minima of each joint's speed (a hand
stopping at the end of a stroke) where the joint moves fast enough to matter. For every audio onset
the distance d to the nearest motion beat of a joint scores exp(-d^2 / (2 sigma^2)); BC is that score
averaged over onsets, then over the 13 upper-body joints (a joint without beats scores 0). 1 means
every onset has a motion beat on it.

On BEAT2 the first and last 2 s are skipped and the clip scores are averaged weighted by their
frame counts; ``clip_beat_consistency`` does the skipping, ``weighted_mean`` the averaging.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import librosa
import numpy as np
from scipy.signal import argrelextrema

# SMPL-X joints: spine 1-3, neck, collars, head, shoulders, elbows, wrists.
UPPER_BODY_JOINTS = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
SIGMA_S = 0.3  # BEAT setting (EMAGE uses 0.5 for TalkShow)
MINIMUM_ORDER = 7  # a speed minimum must be the lowest within +-7 frames
SPEED_THRESHOLD = 0.10  # in units of the joint's mean speed: slower joints make no beats
ONSET_HOP = 512  # librosa onset hop length (samples)
SKIP_SECONDS = 2.0  # BEAT2 evaluation ignores the first and last 2 s


def load_mean_joint_speed(path: str | Path) -> np.ndarray:
    """The per-joint mean speed of the training data (``mean_vel_smplxflame_30.npy`` of EMAGE) that
    normalises joint speeds; shape (joints,)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; get mean_vel_smplxflame_30.npy from the EMAGE evaluation tools "
            "(PantoMatrix emage_evaltools/, or the H-Liu1997/EMAGE Hugging Face space) and pass its path"
        )
    return np.load(path, allow_pickle=False)


def joint_speed(positions: np.ndarray, fps: float) -> np.ndarray:
    """(frames, joints, 3) positions -> (frames, joints) speed: central differences inside, one-sided
    differences at both ends."""
    if positions.ndim != 3 or positions.shape[-1] != 3 or positions.shape[0] < 2:
        raise ValueError(f"expected joint positions (frames >= 2, joints, 3), got shape {positions.shape}")
    velocity = np.gradient(positions, 1.0 / fps, axis=0, edge_order=1)
    return np.linalg.norm(velocity, axis=-1)


def motion_beats(
    normalized_speed: np.ndarray, start: int, end: int, order: int = MINIMUM_ORDER, threshold: float = SPEED_THRESHOLD
) -> list[np.ndarray]:
    """Per joint, the frames (counted from ``start``) of strict local speed minima in [start, end).

    A minimum is kept when the speed at frame index ``m`` of the WHOLE clip exceeds ``threshold``,
    with ``m`` counted from ``start``: emage_evaltools compares the relative index against the
    absolute speed array, and BC scores are only comparable to published ones with that quirk kept.
    """
    beats = []
    for joint in range(normalized_speed.shape[1]):
        minima = argrelextrema(normalized_speed[start:end, joint], np.less, order=order)[0]
        beats.append(minima[normalized_speed[minima, joint] > threshold])
    return beats


def audio_onsets(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times in seconds (librosa's detector, hop 512 samples)."""
    return librosa.onset.onset_detect(
        y=waveform.astype(np.float32), sr=sample_rate, hop_length=ONSET_HOP, units="time"
    )


def onset_hit_rate(onsets: np.ndarray, beat_times: np.ndarray, sigma: float = SIGMA_S) -> float:
    """Mean over onsets of exp(-d^2 / (2 sigma^2)), d = distance to the nearest beat time."""
    if len(onsets) == 0:
        raise ValueError("the audio has no onsets, so beat consistency is undefined")
    distance = np.abs(np.asarray(onsets)[:, None] - np.asarray(beat_times)[None, :]).min(axis=1)
    return float(np.exp(-(distance**2) / (2 * sigma**2)).mean())


def beat_consistency(
    onsets: np.ndarray,
    beats_per_joint: Sequence[np.ndarray],
    fps: float,
    sigma: float = SIGMA_S,
    joints: Sequence[int] = UPPER_BODY_JOINTS,
) -> float:
    """BC of one clip: onset times (s) against motion beat frames of each joint in ``joints``."""
    scores = [
        onset_hit_rate(onsets, beats_per_joint[joint] / fps, sigma) if len(beats_per_joint[joint]) else 0.0
        for joint in joints
    ]
    return float(np.mean(scores))


def clip_beat_consistency(
    waveform: np.ndarray,
    sample_rate: int,
    positions: np.ndarray,
    fps: float,
    mean_joint_speed: np.ndarray | None,
    skip_seconds: float = SKIP_SECONDS,
) -> tuple[float, int]:
    """(BC, frames scored) of a clip, skipping ``skip_seconds`` at both ends as on BEAT2.

    positions: (frames, 55, 3) SMPL-X joint positions at ``fps``; mean_joint_speed: (55,) from
    load_mean_joint_speed, or None to normalise by the clip's top speed (what emage_evaltools falls
    back to; scores are then not comparable to published ones).
    """
    frames = positions.shape[0]
    skip_frames = round(skip_seconds * fps)
    if frames <= 2 * skip_frames:
        raise ValueError(f"a clip of {frames} frames is too short to skip {skip_seconds} s at both ends")
    speed = joint_speed(positions, fps)
    if mean_joint_speed is None:
        warnings.warn("no mean joint speed given: normalising by the clip's top speed", stacklevel=2)
        mean_joint_speed = speed.max()
    beats = motion_beats(speed / mean_joint_speed, skip_frames, frames - skip_frames)
    first_sample = round(skip_seconds * sample_rate)
    last_sample = int((frames - skip_frames) / fps * sample_rate)
    onsets = audio_onsets(waveform[first_sample:last_sample], sample_rate)
    return beat_consistency(onsets, beats, fps), frames - 2 * skip_frames


def weighted_mean(scores: Sequence[float], frames: Sequence[int]) -> float:
    """Scores of several clips averaged with their frame counts as weights."""
    return float(np.dot(scores, frames) / np.sum(frames))
