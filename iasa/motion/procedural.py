"""A deterministic, audio-driven talking motion that needs no model weights.

It is a stand-in for EMAGE with the same call protocol (``generator(waveform_16k) -> SmplxMotion``) so the
whole pipeline runs on a fresh machine. Per 30 fps frame it derives from the speech:
- the jaw opening, from the loudness envelope (the syllable rhythm makes the mouth move);
- head nods and arm beats at speech onsets (the stroke of a beat gesture lands on the stressed syllable);
- idle sway of the spine and head (slow incommensurate sinusoids) and blinks every few seconds.
All randomness comes from one seeded generator, so the same audio always gives the same motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from einops import rearrange
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from iasa.config import check
from iasa.motion.motion_file import NUM_BETAS, NUM_EXPRESSIONS, NUM_JOINTS, SmplxMotion
from iasa.pose.skeleton import BLINK_EXPRESSION_INDEX

SAMPLE_RATE = 16000

PELVIS, SPINE1, SPINE2, SPINE3, NECK, HEAD, JAW = 0, 3, 6, 9, 12, 15, 22
LEFT_COLLAR, RIGHT_COLLAR, LEFT_SHOULDER, RIGHT_SHOULDER = 13, 14, 16, 17
LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST = 18, 19, 20, 21
LEFT_FINGERS, RIGHT_FINGERS = range(25, 40), range(40, 55)
LEFT_THUMB = range(37, 40)
X_AXIS, Y_AXIS, Z_AXIS = np.eye(3)


@dataclass
class ProceduralMotionConfig:
    # Seed of every random choice (beat arm, beat strength, sway phases, blink times).
    seed: int = 0
    fps: float = 30.0
    # Frames quieter than this (RMS, dB full scale) count as silence.
    silence_dbfs: float = -45.0
    # Loudness maps to [0, 1] over this many dB below the loudest frame of the clip.
    loudness_range_db: float = 30.0
    # Jaw rotation at full loudness.
    jaw_open_max_rad: float = 0.3
    # Onsets: a rise of the smoothed loudness by at least this much per frame, at least this far apart.
    onset_min_rise: float = 0.06
    onset_min_gap_s: float = 0.3
    # Beat gestures follow every onset at least this far after the previous beat.
    beat_min_gap_s: float = 0.45
    # A beat lifts the upper arm forward and bends the elbow by up to these angles.
    beat_shoulder_rad: float = 0.35
    beat_elbow_rad: float = 0.5
    # Which arm a beat moves: probabilities (summing to 1) of left only, right only, both; a speaker's handedness.
    beat_arm_weights: tuple[float, float, float] = (0.35, 0.35, 0.3)
    # On the stroke of a beat the wrist cocks back by up to this angle and the finger curl relaxes by this fraction.
    beat_wrist_rad: float = 0.3
    beat_hand_open: float = 0.7
    # Time from the start of a gesture to its peak, and its decay time constant.
    beat_rise_s: float = 0.15
    beat_decay_s: float = 0.35
    # Head nod (pitch) at a strong onset.
    nod_rad: float = 0.12
    # Amplitude of the idle sway of spine and head.
    sway_rad: float = 0.04
    # Blinks happen at random intervals in this range and last blink_duration_s.
    blink_interval_s: tuple[float, float] = (2.0, 5.0)
    blink_duration_s: float = 0.2
    # Rest "talking" arm pose: upper arm out from the body, forward, twisted inwards; elbow bend.
    arm_abduction_rad: float = 0.12
    arm_forward_rad: float = 0.35
    arm_inward_twist_rad: float = 0.4
    elbow_bend_rad: float = 1.45
    finger_curl_rad: float = 0.35

    def validate(self) -> None:
        check(self.fps > 0, "fps", self.fps, "must be > 0")
        interval = list(self.blink_interval_s)
        check(len(interval) == 2 and 0 < interval[0] <= interval[-1], "blink_interval_s", interval,
              "must be [shortest, longest] with 0 < shortest <= longest")  # fmt: skip


class ProceduralMotionGenerator:
    """``generator(waveform)`` with a 16 kHz mono float waveform (N,) -> SmplxMotion of
    max(1, round(N / 16000 * fps)) frames."""

    def __init__(self, config: ProceduralMotionConfig | None = None) -> None:
        self.config = config or ProceduralMotionConfig()

    def __call__(self, waveform: np.ndarray) -> SmplxMotion:
        config = self.config
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        frames = max(1, int(round(len(waveform) / SAMPLE_RATE * config.fps)))
        rng = np.random.default_rng(config.seed)
        time_s = np.arange(frames) / config.fps

        loudness = frame_loudness(waveform, frames, config)
        smooth = smooth_envelope(loudness, sigma_frames=2.0)
        onsets = detect_onsets(smooth, config)
        beats = _thin_onsets(onsets, int(round(config.beat_min_gap_s * config.fps)))

        rotations = np.zeros((frames, NUM_JOINTS, 3))
        rotations[:, JAW] = X_AXIS * (config.jaw_open_max_rad * smooth_envelope(loudness, sigma_frames=0.7))[:, None]
        self._head_and_spine(rotations, time_s, onsets, smooth, rng)
        self._arms(rotations, beats, rng)

        expressions = np.zeros((frames, NUM_EXPRESSIONS), np.float32)
        expressions[:, BLINK_EXPRESSION_INDEX] = blink_curve(frames, config, rng)
        return SmplxMotion(
            poses=rearrange(rotations, "t j c -> t (j c)").astype(np.float32),
            expressions=expressions,
            trans=np.zeros((frames, 3), np.float32),
            betas=np.zeros(NUM_BETAS, np.float32),
            fps=config.fps,
        )

    def _head_and_spine(
        self, rotations: np.ndarray, time_s: np.ndarray, onsets: np.ndarray, loudness: np.ndarray,
        rng: np.random.Generator,
    ) -> None:  # fmt: skip
        config = self.config
        frames = len(time_s)

        def sway(frequencies_hz: tuple[float, ...]) -> np.ndarray:
            phases = rng.uniform(0, 2 * np.pi, len(frequencies_hz))
            wave = sum(np.sin(2 * np.pi * f * time_s + p) for f, p in zip(frequencies_hz, phases))
            return config.sway_rad * wave / len(frequencies_hz)

        strength = loudness[onsets] if len(onsets) else np.zeros(0)
        nods = config.nod_rad * _pulses(frames, onsets, strength * rng.uniform(0.6, 1.0, len(onsets)), config)
        spine_yaw, spine_roll = sway((0.11, 0.23)), sway((0.07, 0.17))
        head_yaw, head_roll, head_pitch = sway((0.19, 0.31)), sway((0.13, 0.29)), sway((0.09, 0.21))
        rotations[:, PELVIS] = Y_AXIS * (0.5 * spine_yaw)[:, None]
        for joint in (SPINE1, SPINE2, SPINE3):
            rotations[:, joint] = np.stack([0.2 * nods, spine_yaw / 3, spine_roll / 3], axis=-1)
        rotations[:, NECK] = np.stack([0.4 * nods + 0.5 * head_pitch, 0.4 * head_yaw, 0.4 * head_roll], axis=-1)
        rotations[:, HEAD] = np.stack([0.6 * nods + 0.5 * head_pitch, 0.6 * head_yaw, 0.6 * head_roll], axis=-1)

    def _arms(self, rotations: np.ndarray, beats: np.ndarray, rng: np.random.Generator) -> None:
        """Rest talking pose plus beat gestures, built for the left arm and mirrored for the right."""
        config = self.config
        frames = rotations.shape[0]
        # Which arm(s) each beat moves: left, right or both.
        side = rng.choice(3, size=len(beats), p=config.beat_arm_weights)
        amplitude = rng.uniform(0.5, 1.0, len(beats))
        for arm, (shoulder, elbow, wrist, collar, fingers) in enumerate(
            ((LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, LEFT_COLLAR, LEFT_FINGERS),
             (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST, RIGHT_COLLAR, RIGHT_FINGERS))
        ):  # fmt: skip
            moves = (side == arm) | (side == 2)
            beat = _pulses(frames, beats[moves], amplitude[moves], config)
            forward = config.arm_forward_rad + config.beat_shoulder_rad * beat
            down = np.pi / 2 - config.arm_abduction_rad - 0.3 * config.beat_shoulder_rad * beat
            shoulder_rotation = (
                Rotation.from_rotvec(-X_AXIS * forward[:, None])
                * Rotation.from_rotvec(-Z_AXIS * down[:, None])
                * Rotation.from_rotvec(X_AXIS * np.full((frames, 1), config.arm_inward_twist_rad))
            ).as_rotvec()
            elbow_rotation = -Y_AXIS * (config.elbow_bend_rad + config.beat_elbow_rad * beat)[:, None]
            # The hand opens (fingers straighten) and the wrist cocks back on the stroke of a beat.
            wrist_rotation = Z_AXIS * (config.beat_wrist_rad * beat)[:, None] + X_AXIS * 0.2
            curl = config.finger_curl_rad * (1.0 - config.beat_hand_open * beat)
            finger_rotation = np.zeros((frames, len(fingers), 3))
            finger_rotation[..., 2] = -curl[:, None]
            finger_rotation[:, [j - fingers.start for j in LEFT_THUMB], 2] = 0.0  # the thumb stays extended
            collar_rotation = Z_AXIS * (0.05 * beat)[:, None]
            if arm == 1:  # mirror across the body's mid-plane: (x, y, z) rotation vector -> (x, -y, -z)
                shoulder_rotation, elbow_rotation, wrist_rotation, finger_rotation, collar_rotation = (
                    value * np.array([1.0, -1.0, -1.0])
                    for value in (shoulder_rotation, elbow_rotation, wrist_rotation, finger_rotation, collar_rotation)
                )
            rotations[:, shoulder] = shoulder_rotation
            rotations[:, elbow] = elbow_rotation
            rotations[:, wrist] = wrist_rotation
            rotations[:, collar] = collar_rotation
            rotations[:, fingers.start : fingers.stop] = finger_rotation


def frame_loudness(waveform: np.ndarray, frames: int, config: ProceduralMotionConfig) -> np.ndarray:
    """(T,) loudness in [0, 1]: the RMS of each frame's samples in dB, 0 at or below silence_dbfs or
    loudness_range_db under the loudest frame, 1 at the loudest frame."""
    bounds = np.round(np.arange(frames + 1) * SAMPLE_RATE / config.fps).astype(np.int64).clip(0, len(waveform))
    energy = np.concatenate([[0.0], np.cumsum(waveform.astype(np.float64) ** 2)])
    counts = np.maximum(bounds[1:] - bounds[:-1], 1)
    rms = np.sqrt((energy[bounds[1:]] - energy[bounds[:-1]]) / counts)
    level_db = 20 * np.log10(np.maximum(rms, 1e-10))
    floor_db = max(config.silence_dbfs, level_db.max() - config.loudness_range_db)
    return np.clip((level_db - floor_db) / config.loudness_range_db, 0.0, 1.0) * (level_db > config.silence_dbfs)


def detect_onsets(loudness: np.ndarray, config: ProceduralMotionConfig) -> np.ndarray:
    """Frame indices where the smoothed loudness (T,) rises fastest, at least onset_min_gap_s apart,
    strongest first when two compete."""
    rise = np.diff(loudness, prepend=loudness[:1])
    peak = (rise >= np.roll(rise, 1)) & (rise >= np.roll(rise, -1)) & (rise >= config.onset_min_rise)
    candidates = np.flatnonzero(peak)
    gap = int(round(config.onset_min_gap_s * config.fps))
    chosen: list[int] = []
    for frame in candidates[np.argsort(-rise[candidates], kind="stable")]:
        if all(abs(frame - other) >= gap for other in chosen):
            chosen.append(int(frame))
    return np.array(sorted(chosen), dtype=np.int64)


def blink_curve(frames: int, config: ProceduralMotionConfig, rng: np.random.Generator) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: a smooth close-and-open every blink_interval_s."""
    closure = np.zeros(frames)
    duration = config.blink_duration_s * config.fps
    start = rng.uniform(*config.blink_interval_s) * config.fps * 0.5
    time = np.arange(frames)
    while start < frames:
        phase = (time - start) / duration
        closure = np.maximum(closure, np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * phase) ** 2, 0.0))
        start += rng.uniform(*config.blink_interval_s) * config.fps
    return closure.astype(np.float32)


def _pulses(frames: int, starts: np.ndarray, amplitudes: np.ndarray, config: ProceduralMotionConfig) -> np.ndarray:
    """(T,) sum of gesture pulses that start at ``starts`` (frames), peak beat_rise_s later at
    ``amplitudes`` and decay with beat_decay_s; the sum is soft-limited to [0, 1)."""
    time = np.arange(frames)[:, None] - np.asarray(starts)[None, :]
    rise, decay = config.beat_rise_s * config.fps, config.beat_decay_s * config.fps
    attack = np.sin(np.pi / 2 * np.clip(time / rise, 0.0, 1.0)) ** 2
    release = np.exp(-np.maximum(time - rise, 0.0) / decay)
    total = (np.where(time >= 0, attack * release, 0.0) * np.asarray(amplitudes)[None, :]).sum(axis=1)
    return np.tanh(total)


def _thin_onsets(onsets: np.ndarray, min_gap_frames: int) -> np.ndarray:
    """Keep onsets in time order, dropping any closer than ``min_gap_frames`` to the last kept one."""
    kept: list[int] = []
    for frame in onsets:
        if not kept or frame - kept[-1] >= min_gap_frames:
            kept.append(int(frame))
    return np.array(kept, dtype=np.int64)


def smooth_envelope(signal: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing of a (T,) signal with edge values held."""
    return gaussian_filter1d(signal.astype(np.float64), sigma_frames, mode="nearest")
