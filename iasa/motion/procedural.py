"""A deterministic, audio-driven talking motion that needs no model weights.

It is a stand-in for EMAGE with the same call protocol (``generator(waveform_16k) -> SmplxMotion``) so the
whole pipeline runs on a fresh machine. Per 30 fps frame it derives from the speech:
- the jaw opening, from the loudness envelope (the syllable rhythm makes the mouth move);
- head nods and arm beats at speech onsets (the stroke of a beat gesture lands on the stressed syllable);
- idle sway of the spine and head (slow incommensurate sinusoids) and blinks every few seconds.
All randomness comes from one seeded generator, so the same audio always gives the same motion.

`ProceduralMotionGenerator` sees the whole clip; `LiveProceduralMotion` makes the same kind of motion as the
speech arrives (frame t final once the audio through frame t + `lookahead_frames` is in), for streaming.
"""

from __future__ import annotations

from bisect import bisect_left
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

# Gaussian smoothing of the loudness (frames): for the onsets, and lighter for the jaw. It reaches
# SMOOTHING_TRUNCATE_SIGMAS sigmas to either side (scipy's default, passed explicitly so the reach is stated).
ONSET_SMOOTHING_SIGMA = 2.0
JAW_SMOOTHING_SIGMA = 0.7
SMOOTHING_TRUNCATE_SIGMAS = 4.0
# An onset is a peak of the loudness's rise: frame t's is known once the rise of frame t + 1 is.
ONSET_PEAK_LOOKAHEAD_FRAMES = 1
# The idle sway: per wave, the frequencies (Hz) of the sinusoids it averages, in the order their phases are drawn.
SWAY_FREQUENCIES_HZ = {
    "spine_yaw": (0.11, 0.23), "spine_roll": (0.07, 0.17),
    "head_yaw": (0.19, 0.31), "head_roll": (0.13, 0.29), "head_pitch": (0.09, 0.21),
}  # fmt: skip
# The live motion drops a gesture pulse this many decay times past its peak (e^-40 < 1e-17 of its amplitude),
# so the work per frame stays bounded over a stream of any length.
PULSE_REACH_DECAYS = 40.0


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
        frames = motion_frame_count(len(waveform), config.fps)
        rng = np.random.default_rng(config.seed)
        time_s = np.arange(frames) / config.fps

        loudness = frame_loudness(waveform, frames, config)
        smooth = smooth_envelope(loudness, ONSET_SMOOTHING_SIGMA)
        onsets = detect_onsets(smooth, config)
        beats = _thin_onsets(onsets, int(round(config.beat_min_gap_s * config.fps)))

        rotations = np.zeros((frames, NUM_JOINTS, 3))
        rotations[:, JAW] = jaw_rotation(smooth_envelope(loudness, JAW_SMOOTHING_SIGMA), config)
        strength = smooth[onsets] if len(onsets) else np.zeros(0)
        nods = config.nod_rad * _pulses(frames, onsets, strength * rng.uniform(0.6, 1.0, len(onsets)), config)
        sways = {
            name: sway_wave(time_s, frequencies, rng.uniform(0, 2 * np.pi, len(frequencies)), config)
            for name, frequencies in SWAY_FREQUENCIES_HZ.items()
        }
        head_and_spine_rotations(rotations, nods, sways)
        # Which arm(s) each beat moves: left, right or both.
        side = rng.choice(3, size=len(beats), p=config.beat_arm_weights)
        amplitude = rng.uniform(0.5, 1.0, len(beats))
        for arm in (0, 1):
            moves = (side == arm) | (side == 2)
            arm_rotations(rotations, arm, _pulses(frames, beats[moves], amplitude[moves], config), config)

        expressions = np.zeros((frames, NUM_EXPRESSIONS), np.float32)
        expressions[:, BLINK_EXPRESSION_INDEX] = blink_curve(frames, config, rng)
        return _motion(rotations, expressions, config)


class LiveProceduralMotion:
    """The procedural motion made as the speech arrives, for one stream (create one per stream).

    push(samples) takes the next 16 kHz mono samples and returns the frames that became final; finish() ends
    the speech and returns the rest, max(1, round(N / 16000 * fps)) frames in all, as ProceduralMotionGenerator
    makes. Frame t is final once the audio through the end of frame t + lookahead_frames is in (or the speech
    has ended): the onset smoothing's reach plus the onset peak's one frame; nothing else looks ahead. How the
    audio is cut into pieces does not change the motion.

    Where it differs from ProceduralMotionGenerator, which sees the whole clip:
    - loudness maps to [0, 1] below the loudest frame so far (a running maximum), not the clip's loudest;
    - onsets are taken in time order, each at least onset_min_gap_s after the last one taken (the offline rule
      takes the strongest first among competing peaks); outside the speech the rise counts as 0;
    - each kind of random choice (nod strengths, beat arms and strengths, sway phases, blink times) draws from
      its own generator seeded from config.seed, in the order of its events, so that no choice depends on how
      many events of another kind the clip holds;
    - a frame's loudness sums its own samples (the offline one differences a running sum: equal to rounding);
    - gesture pulses end PULSE_REACH_DECAYS decay times after their peak.
    The smoothing, onset peaks, gesture pulses, sway, blinks and the joint rotations are the same functions.
    """

    def __init__(self, config: ProceduralMotionConfig | None = None) -> None:
        self.config = config or ProceduralMotionConfig()
        config = self.config
        nod_seed, beat_seed, blink_seed, sway_seed = np.random.SeedSequence(config.seed).spawn(4)
        self._nod_rng, self._beat_rng, self._blink_rng = map(np.random.default_rng, (nod_seed, beat_seed, blink_seed))
        sway_rng = np.random.default_rng(sway_seed)
        self._sway_phases = {
            name: sway_rng.uniform(0, 2 * np.pi, len(frequencies)) for name, frequencies in SWAY_FREQUENCIES_HZ.items()
        }
        self._received = 0  # samples pushed
        self._unframed = np.zeros(0, np.float32)  # the samples from the first frame whose loudness is unknown
        self._loudest_db = -np.inf
        self._loudness: list[float] = []  # per frame whose samples are all in
        self._smooth: list[float] = []  # onset-smoothed loudness, per frame whose window is all in
        self._final = 0  # frames returned: every onset before them is decided
        self._onsets: list[int] = []
        self._last_beat: int | None = None
        self._nod_amplitudes: list[float] = []
        self._arm_beats: tuple[list[int], list[int]] = ([], [])  # beat frames of the left and right arm
        self._arm_amplitudes: tuple[list[float], list[float]] = ([], [])
        self._next_blink = self._blink_rng.uniform(*config.blink_interval_s) * config.fps * 0.5
        self._blinks: list[float] = []  # start frames of the blinks that may still show
        self._finished = False

    @property
    def lookahead_frames(self) -> int:
        """Frames of audio past a frame's own that its motion waits for."""
        return smoothing_radius(ONSET_SMOOTHING_SIGMA) + ONSET_PEAK_LOOKAHEAD_FRAMES

    @property
    def onsets(self) -> tuple[int, ...]:
        """The onset frames taken so far."""
        return tuple(self._onsets)

    def push(self, samples: np.ndarray) -> SmplxMotion:
        """Samples (n,) -> the frames that became final (0 or more), in order after those returned before."""
        if self._finished:
            raise ValueError("push after finish: create a new LiveProceduralMotion for a new stream")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._unframed = np.concatenate([self._unframed, samples])
        self._received += len(samples)
        complete = len(self._loudness)
        while _frame_bound(complete + 1, self.config.fps) <= self._received:
            complete += 1
        self._add_loudness(complete)
        return self._advance(end=False)

    def finish(self) -> SmplxMotion:
        """The speech has ended: the remaining frames."""
        if self._finished:
            raise ValueError("finish called twice")
        self._finished = True
        self._add_loudness(motion_frame_count(self._received, self.config.fps))
        return self._advance(end=True)

    def _add_loudness(self, frames: int) -> None:
        """The loudness of frames len(self._loudness)..frames - 1 (samples past the end of the speech count as absent)."""
        first = len(self._loudness)
        if frames <= first:
            return
        fps = self.config.fps
        base = _frame_bound(first, fps)
        rms = []
        for frame in range(first, frames):
            start, stop = (min(_frame_bound(f, fps), self._received) - base for f in (frame, frame + 1))
            energy = np.sum(self._unframed[start:stop].astype(np.float64) ** 2)
            rms.append(np.sqrt(energy / max(stop - start, 1)))
        self._unframed = self._unframed[min(_frame_bound(frames, fps), self._received) - base :]
        levels = level_db(np.array(rms))
        loudest = np.maximum.accumulate(np.concatenate([[self._loudest_db], levels]))[1:]
        self._loudest_db = float(loudest[-1])
        self._loudness.extend(loudness_from_levels(levels, loudest, self.config).tolist())

    def _advance(self, end: bool) -> SmplxMotion:
        """Smooth, take the onsets and make the frames that are final now (all of them at the end)."""
        config = self.config
        known = len(self._loudness)
        radius = smoothing_radius(ONSET_SMOOTHING_SIGMA)
        smoothable = known if end else known - radius
        self._smooth += _smooth_span(self._loudness, len(self._smooth), smoothable, ONSET_SMOOTHING_SIGMA)
        decided = len(self._smooth) if end else len(self._smooth) - ONSET_PEAK_LOOKAHEAD_FRAMES
        onset_gap = int(round(config.onset_min_gap_s * config.fps))
        beat_gap = int(round(config.beat_min_gap_s * config.fps))
        for frame in range(self._final, decided):
            if not self._is_onset_peak(frame) or (self._onsets and frame - self._onsets[-1] < onset_gap):
                continue
            self._onsets.append(frame)
            self._nod_amplitudes.append(self._smooth[frame] * self._nod_rng.uniform(0.6, 1.0))
            if self._last_beat is None or frame - self._last_beat >= beat_gap:  # beats thin the onsets (_thin_onsets)
                self._last_beat = frame
                side = self._beat_rng.choice(3, p=config.beat_arm_weights)  # left, right or both
                amplitude = self._beat_rng.uniform(0.5, 1.0)
                for arm in (0, 1):
                    if side in (arm, 2):
                        self._arm_beats[arm].append(frame)
                        self._arm_amplitudes[arm].append(amplitude)
        first, self._final = self._final, max(self._final, decided)
        return self._frames(first, self._final)

    def _is_onset_peak(self, frame: int) -> bool:
        """detect_onsets' peak test at `frame` on the smoothed loudness so far, the rise outside it 0."""

        def rise(t: int) -> float:
            return self._smooth[t] - self._smooth[t - 1] if 0 < t < len(self._smooth) else 0.0

        here = rise(frame)
        return here >= rise(frame - 1) and here >= rise(frame + 1) and here >= self.config.onset_min_rise

    def _frames(self, first: int, stop: int) -> SmplxMotion:
        """Frames first..stop - 1, whose inputs are all known."""
        config = self.config
        frames = np.arange(first, stop)
        time_s = frames / config.fps
        rotations = np.zeros((len(frames), NUM_JOINTS, 3))
        jaw = _smooth_span(self._loudness, first, stop, JAW_SMOOTHING_SIGMA)
        rotations[:, JAW] = jaw_rotation(np.asarray(jaw, dtype=np.float64), config)
        nods = config.nod_rad * self._pulses(frames, self._onsets, self._nod_amplitudes)
        sways = {
            name: sway_wave(time_s, frequencies, self._sway_phases[name], config)
            for name, frequencies in SWAY_FREQUENCIES_HZ.items()
        }
        head_and_spine_rotations(rotations, nods, sways)
        for arm in (0, 1):
            arm_rotations(rotations, arm, self._pulses(frames, self._arm_beats[arm], self._arm_amplitudes[arm]), config)
        expressions = np.zeros((len(frames), NUM_EXPRESSIONS), np.float32)
        expressions[:, BLINK_EXPRESSION_INDEX] = self._blink_closure(frames)
        return _motion(rotations, expressions, config)

    def _pulses(self, frames: np.ndarray, starts: list[int], amplitudes: list[float]) -> np.ndarray:
        """(T,) the soft-limited sum of the pulses that started at `starts` and are within their reach, per frame
        (each frame's sum over exactly its own pulses, so that it does not depend on the other frames asked)."""
        config = self.config
        reach = (config.beat_rise_s + PULSE_REACH_DECAYS * config.beat_decay_s) * config.fps
        total = np.zeros(len(frames))
        for index, frame in enumerate(frames):
            lo, hi = bisect_left(starts, frame - reach), bisect_left(starts, frame + 1)
            elapsed = frame - np.asarray(starts[lo:hi], dtype=np.int64)
            total[index] = (_pulse_shape(elapsed, config) * np.asarray(amplitudes[lo:hi])).sum()
        return np.tanh(total)

    def _blink_closure(self, frames: np.ndarray) -> np.ndarray:
        """(T,) eyelid closure at these frames (the latest asked), drawing the blink times as time passes."""
        config = self.config
        if not len(frames):
            return np.zeros(0, np.float32)
        while self._next_blink < frames[-1] + 1:
            self._blinks.append(self._next_blink)
            self._next_blink += self._blink_rng.uniform(*config.blink_interval_s) * config.fps
        # Blinks over before these frames no longer show.
        self._blinks = [start for start in self._blinks if start + config.blink_duration_s * config.fps >= frames[0]]
        return blink_closure(frames, self._blinks, config)


def motion_frame_count(samples: int, fps: float) -> int:
    """Frames of the motion of `samples` 16 kHz samples: max(1, round(duration * fps))."""
    return max(1, int(round(samples / SAMPLE_RATE * fps)))


def _frame_bound(frame: int, fps: float) -> int:
    """First sample of `frame` (frame_loudness's frame bounds)."""
    return int(np.round(frame * SAMPLE_RATE / fps))


def _motion(rotations: np.ndarray, expressions: np.ndarray, config: ProceduralMotionConfig) -> SmplxMotion:
    """SmplxMotion of rotations (T, 55, 3) and expressions (T, 100); no translation, the mean shape."""
    frames = rotations.shape[0]
    return SmplxMotion(
        poses=rearrange(rotations, "t j c -> t (j c)").astype(np.float32),
        expressions=expressions,
        trans=np.zeros((frames, 3), np.float32),
        betas=np.zeros(NUM_BETAS, np.float32),
        fps=config.fps,
    )


def jaw_rotation(opening: np.ndarray, config: ProceduralMotionConfig) -> np.ndarray:
    """(T, 3) jaw rotation of a (T,) opening in [0, 1]."""
    return X_AXIS * (config.jaw_open_max_rad * opening)[:, None]


def sway_wave(
    time_s: np.ndarray, frequencies_hz: tuple[float, ...], phases: np.ndarray, config: ProceduralMotionConfig
) -> np.ndarray:
    """(T,) idle sway angle at times (T,): the mean of sinusoids of these frequencies and phases, times sway_rad."""
    wave = sum(np.sin(2 * np.pi * f * time_s + p) for f, p in zip(frequencies_hz, phases))
    return config.sway_rad * wave / len(frequencies_hz)


def head_and_spine_rotations(rotations: np.ndarray, nods: np.ndarray, sways: dict[str, np.ndarray]) -> None:
    """Write the pelvis, spine, neck and head rotations of rotations (T, 55, 3) from nods (T,) and the sway
    waves (T,) named as in SWAY_FREQUENCIES_HZ."""
    spine_yaw, spine_roll = sways["spine_yaw"], sways["spine_roll"]
    head_yaw, head_roll, head_pitch = sways["head_yaw"], sways["head_roll"], sways["head_pitch"]
    rotations[:, PELVIS] = Y_AXIS * (0.5 * spine_yaw)[:, None]
    for joint in (SPINE1, SPINE2, SPINE3):
        rotations[:, joint] = np.stack([0.2 * nods, spine_yaw / 3, spine_roll / 3], axis=-1)
    rotations[:, NECK] = np.stack([0.4 * nods + 0.5 * head_pitch, 0.4 * head_yaw, 0.4 * head_roll], axis=-1)
    rotations[:, HEAD] = np.stack([0.6 * nods + 0.5 * head_pitch, 0.6 * head_yaw, 0.6 * head_roll], axis=-1)


def arm_rotations(rotations: np.ndarray, arm: int, beat: np.ndarray, config: ProceduralMotionConfig) -> None:
    """Write one arm's rotations (arm 0 left, 1 right) of rotations (T, 55, 3): the rest talking pose plus the
    beat gesture of strength beat (T,) in [0, 1), built for the left arm and mirrored for the right."""
    frames = rotations.shape[0]
    shoulder, elbow, wrist, collar, fingers = (
        (LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, LEFT_COLLAR, LEFT_FINGERS),
        (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST, RIGHT_COLLAR, RIGHT_FINGERS),
    )[arm]
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


def level_db(rms: np.ndarray) -> np.ndarray:
    """RMS -> dB full scale (floored at -200 dB)."""
    return 20 * np.log10(np.maximum(rms, 1e-10))


def loudness_from_levels(
    levels_db: np.ndarray, loudest_db: float | np.ndarray, config: ProceduralMotionConfig
) -> np.ndarray:
    """(T,) loudness in [0, 1] of frame levels (T,) dB: 0 at or below silence_dbfs or loudness_range_db under
    loudest_db (one value, or one per frame), 1 at loudest_db."""
    floor_db = np.maximum(config.silence_dbfs, loudest_db - config.loudness_range_db)
    return np.clip((levels_db - floor_db) / config.loudness_range_db, 0.0, 1.0) * (levels_db > config.silence_dbfs)


def frame_loudness(waveform: np.ndarray, frames: int, config: ProceduralMotionConfig) -> np.ndarray:
    """(T,) loudness in [0, 1]: the RMS of each frame's samples in dB, 0 at or below silence_dbfs or
    loudness_range_db under the loudest frame, 1 at the loudest frame."""
    bounds = np.round(np.arange(frames + 1) * SAMPLE_RATE / config.fps).astype(np.int64).clip(0, len(waveform))
    energy = np.concatenate([[0.0], np.cumsum(waveform.astype(np.float64) ** 2)])
    counts = np.maximum(bounds[1:] - bounds[:-1], 1)
    levels = level_db(np.sqrt((energy[bounds[1:]] - energy[bounds[:-1]]) / counts))
    return loudness_from_levels(levels, levels.max(), config)


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
    starts = []
    start = rng.uniform(*config.blink_interval_s) * config.fps * 0.5
    while start < frames:
        starts.append(start)
        start += rng.uniform(*config.blink_interval_s) * config.fps
    return blink_closure(np.arange(frames), starts, config)


def blink_closure(frames: np.ndarray, starts: list[float], config: ProceduralMotionConfig) -> np.ndarray:
    """(T,) float32 eyelid closure at frames (T,) of the blinks that start at `starts` (frames), each a
    sin² close-and-open over blink_duration_s."""
    closure = np.zeros(len(frames))
    duration = config.blink_duration_s * config.fps
    for start in starts:
        phase = (frames - start) / duration
        closure = np.maximum(closure, np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * phase) ** 2, 0.0))
    return closure.astype(np.float32)


def _pulse_shape(elapsed: np.ndarray, config: ProceduralMotionConfig) -> np.ndarray:
    """A gesture pulse of peak 1, `elapsed` (any shape) frames after its start: 0 before, rising to the peak
    over beat_rise_s, then decaying with beat_decay_s."""
    rise, decay = config.beat_rise_s * config.fps, config.beat_decay_s * config.fps
    attack = np.sin(np.pi / 2 * np.clip(elapsed / rise, 0.0, 1.0)) ** 2
    release = np.exp(-np.maximum(elapsed - rise, 0.0) / decay)
    return np.where(elapsed >= 0, attack * release, 0.0)


def _pulses(frames: int, starts: np.ndarray, amplitudes: np.ndarray, config: ProceduralMotionConfig) -> np.ndarray:
    """(T,) sum of gesture pulses that start at ``starts`` (frames), peak beat_rise_s later at
    ``amplitudes`` and decay with beat_decay_s; the sum is soft-limited to [0, 1)."""
    elapsed = np.arange(frames)[:, None] - np.asarray(starts)[None, :]
    return np.tanh((_pulse_shape(elapsed, config) * np.asarray(amplitudes)[None, :]).sum(axis=1))


def _thin_onsets(onsets: np.ndarray, min_gap_frames: int) -> np.ndarray:
    """Keep onsets in time order, dropping any closer than ``min_gap_frames`` to the last kept one."""
    kept: list[int] = []
    for frame in onsets:
        if not kept or frame - kept[-1] >= min_gap_frames:
            kept.append(int(frame))
    return np.array(kept, dtype=np.int64)


def smoothing_radius(sigma_frames: float) -> int:
    """Frames to either side that smooth_envelope reads (scipy's rule: truncate * sigma, rounded)."""
    return int(SMOOTHING_TRUNCATE_SIGMAS * sigma_frames + 0.5)


def smooth_envelope(signal: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing of a (T,) signal with edge values held."""
    return gaussian_filter1d(signal.astype(np.float64), sigma_frames, mode="nearest", truncate=SMOOTHING_TRUNCATE_SIGMAS)


def _smooth_span(signal: list[float], first: int, stop: int, sigma_frames: float) -> list[float]:
    """smooth_envelope of the whole signal at frames first..stop - 1, read from those frames and their reach
    (the signal must hold stop + radius frames, or end there: its last value is held as at a clip's end)."""
    if stop <= first:
        return []
    radius = smoothing_radius(sigma_frames)
    start = max(0, first - radius)
    window = np.asarray(signal[start : min(len(signal), stop + radius)], dtype=np.float64)
    return smooth_envelope(window, sigma_frames)[first - start : stop - start].tolist()
