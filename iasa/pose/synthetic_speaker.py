"""A synthetic speaker: seeded speech-like audio -> procedural motion -> DWPose keypoints.

For benchmarks, mask plots and tests where no real clip exists. It adds no motion of its own: the
motion is the project's one synthetic generator (iasa.motion.procedural, the weight-free stand-in for
EMAGE) seen through the normal motion -> keypoints path (iasa.pose.pipeline, built-in skeleton). Only
the audio is made up here: a babble of voiced syllables, about four a second with a loudness each, in
phrases separated by pauses, on a slowly gliding pitch, so that the jaw, the nods and the beat
gestures follow a speech-like rhythm.

The camera frames the person from the top of the head to the hands at every aspect ratio:
sqrt(height x width) pixels span FRAMED_SIZE_M metres at the person, so that with the default
SparseAttentionConfig regions the face covers about 3 % of the frame, each hand about 1 % and the arms
with the shoulders about 12 %. Legs are out of the frame (score 0), like hands that drop below it.
"""

from __future__ import annotations

import numpy as np

from iasa.motion.procedural import SAMPLE_RATE, ProceduralMotionConfig, ProceduralMotionGenerator
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.pipeline import motion_to_keypoints

# Syllables: length, onset-to-onset gap, peak amplitude (full scale 1); phrases of this many syllables,
# then a pause.
SYLLABLE_S = (0.12, 0.22)
SYLLABLE_GAP_S = (0.2, 0.3)
SYLLABLE_AMPLITUDE = (0.15, 0.5)
PHRASE_SYLLABLES = (5, 12)
PAUSE_S = (0.3, 0.7)
# Voice pitch: a glide of +-PITCH_SWING_HZ around PITCH_HZ at PITCH_GLIDE_HZ.
PITCH_HZ, PITCH_SWING_HZ, PITCH_GLIDE_HZ = 140.0, 30.0, 0.5
# Camera: metres at the person spanned by sqrt(height x width) pixels, and the image centre's height above
# the rest-pose pelvis (the upper chest: head and hands in the frame).
FRAMED_SIZE_M = 0.8
FRAME_CENTRE_ABOVE_PELVIS_M = 0.45


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """(round(seconds * 16000),) float32 mono waveform at 16 kHz: voiced syllables in phrases."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    envelope = np.zeros_like(time)
    onset = rng.uniform(0.0, SYLLABLE_GAP_S[0])
    while onset < seconds:
        for _ in range(rng.integers(PHRASE_SYLLABLES[0], PHRASE_SYLLABLES[1] + 1)):
            length = rng.uniform(*SYLLABLE_S)
            inside = (time >= onset) & (time < onset + length)
            envelope[inside] = rng.uniform(*SYLLABLE_AMPLITUDE) * np.sin(np.pi * (time[inside] - onset) / length)
            onset += rng.uniform(*SYLLABLE_GAP_S)
        onset += rng.uniform(*PAUSE_S)
    pitch = PITCH_HZ + PITCH_SWING_HZ * np.sin(2 * np.pi * PITCH_GLIDE_HZ * time + rng.uniform(0, 2 * np.pi))
    return (envelope * np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE)).astype(np.float32)


def synthetic_speaker(
    num_frames: int = 81, image_size: tuple[int, int] = (512, 512), seed: int = 0, fps: float = 30.0
) -> WholeBodyKeypoints:
    """Keypoints of ``num_frames`` video frames of a speaker in an image of (height, width) pixels."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    # The generator makes round(samples / 16000 * fps) frames: exactly num_frames for this many samples.
    waveform = synthetic_speech(num_frames / fps, seed)
    motion = ProceduralMotionGenerator(ProceduralMotionConfig(seed=seed, fps=fps))(waveform)
    height, width = image_size
    camera = PoseConfig(
        image_height=height,
        image_width=width,
        framed_height_m=FRAMED_SIZE_M * float(np.sqrt(height / width)),
        frame_center_above_pelvis_m=FRAME_CENTRE_ABOVE_PELVIS_M,
    )
    return motion_to_keypoints(motion, camera)
