"""A synthetic talking upper body: DWPose keypoints of a person speaking and gesturing to the camera.

Used where no real keypoints exist (benchmarks, mask plots, tests). Proportions follow an adult framed
from the waist up, measured in L = sqrt(image height x width) pixels so that every aspect ratio gives
the same fractions of the frame: the face hull (jaw to brows) covers about 3 % of the frame, each open
hand's hull about 2 %, the arms and shoulders about 10 % with the default limb width.

Motion: a slow sway and roll of the torso; gesture phrases that raise the hands in front of the chest
and wander (a few low-frequency sinusoids), the elbows staying by the sides (forearms foreshortened); beats, quick downward strokes of one or both hands at
random times, with a head nod on each beat; wrist flexion and finger curl that change over time; a
mouth that opens and closes at syllable rate; detector jitter; short drop-outs of a hand's confidence
as with motion blur; points outside the image get confidence 0.
"""

from __future__ import annotations

import numpy as np

from iasa.pose.keypoints import BODY_POINTS, FACE_POINTS, WholeBodyKeypoints

# Sizes in units of L = sqrt(height * width).
NECK_HEIGHT = 0.5  # neck at this fraction of the image height
FACE_HALF_WIDTH, FACE_HALF_HEIGHT = 0.095, 0.12
FACE_CENTRE_ABOVE_NECK = 0.19
SHOULDER_HALF_WIDTH = 0.2
UPPER_ARM = 0.27
PALM, FINGER_SEGMENTS = 0.13, (0.05, 0.038, 0.03)
HIP_HALF_WIDTH, HIP_BELOW_NECK = 0.13, 0.62
JITTER = 0.002
BEATS_PER_SECOND = 1.6
SYLLABLES_PER_SECOND = 4.0


def _rotate(vectors: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate (..., 2) vectors by angle (...) radians (image axes: x right, y down)."""
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    x, y = vectors[..., :1], vectors[..., 1:]
    return np.concatenate([cos * x - sin * y, sin * x + cos * y], axis=-1)


def _smooth_noise(rng: np.random.Generator, time: np.ndarray, frequencies: tuple[float, ...]) -> np.ndarray:
    """A smooth random signal in about [-1, 1]: sinusoids of the given frequencies, random phases."""
    phases = rng.uniform(0, 2 * np.pi, len(frequencies))
    waves = [np.sin(2 * np.pi * f * time + p) for f, p in zip(frequencies, phases)]
    return np.sum(waves, axis=0) / np.sqrt(len(frequencies))


def _face_template(mouth_open: np.ndarray) -> np.ndarray:
    """68 face points per frame around the face centre, in face half-widths/heights: (F, 68, 2)."""
    frames = len(mouth_open)
    points = np.zeros((frames, FACE_POINTS, 2))
    jaw_angle = np.pi - np.pi * np.arange(17) / 16  # image left ear -> chin -> image right ear
    points[:, 0:17] = np.stack([np.cos(jaw_angle), np.sin(jaw_angle)], -1)
    brow = np.linspace(0, 1, 5)
    for start, (left, right) in ((17, (-0.85, -0.15)), (22, (0.15, 0.85))):
        points[:, start : start + 5, 0] = left + (right - left) * brow
        points[:, start : start + 5, 1] = -0.6 - 0.1 * np.sin(np.pi * brow)
    points[:, 27:31] = np.stack([np.zeros(4), np.linspace(-0.45, 0.05, 4)], -1)
    points[:, 31:36] = np.stack([np.linspace(-0.22, 0.22, 5), np.full(5, 0.15)], -1)
    eye_angle = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for start, centre in ((36, -0.4), (42, 0.4)):
        points[:, start : start + 6] = np.stack([centre + 0.2 * np.cos(eye_angle), -0.3 + 0.07 * np.sin(eye_angle)], -1)
    lips = [(48, 12, 0.4, 0.08, 0.14), (60, 8, 0.25, 0.02, 0.12)]  # start, count, half-width, closed, open
    for start, count, half_width, closed, opened in lips:
        angle = np.linspace(np.pi, -np.pi, count, endpoint=False)
        half_height = closed + opened * mouth_open[:, None]
        points[:, start : start + count, 0] = half_width * np.cos(angle)
        points[:, start : start + count, 1] = 0.5 - half_height * np.sin(angle)
    return points


def _hand_points(wrist: np.ndarray, direction: np.ndarray, thumb_side: float, curl: np.ndarray, scale: float) -> np.ndarray:
    """21 DWPose hand points from the wrist, the hand's pointing direction (unit, (F, 2)), which side the
    thumb is on (+1 or -1 along the hand's perpendicular) and finger curl in [0, 1]: (F, 21, 2)."""
    across = thumb_side * np.stack([-direction[:, 1], direction[:, 0]], -1)
    thumb_direction = _rotate(direction, -thumb_side * 0.8)
    joint = wrist + scale * (0.025 * direction + 0.04 * across)
    points = [wrist, joint]
    for length in (0.045, 0.037, 0.03):
        joint = joint + scale * length * (1 - 0.4 * curl)[:, None] * thumb_direction
        points.append(joint)
    for knuckle_offset in (0.057, 0.019, -0.019, -0.057):  # index, middle, ring, pinky
        joint = wrist + scale * (PALM * direction + knuckle_offset * across)
        points.append(joint)
        spread = _rotate(direction, -thumb_side * knuckle_offset * 2.5)
        for length in FINGER_SEGMENTS:
            joint = joint + scale * length * (1 - 0.7 * curl)[:, None] * spread
            points.append(joint)
    return np.stack(points, axis=1)


def synthetic_talking_upper_body(
    num_frames: int = 81, image_size: tuple[int, int] = (512, 512), seed: int = 0, fps: float = 30.0
) -> WholeBodyKeypoints:
    """Keypoints of ``num_frames`` video frames of a speaker, coordinates normalised to [0, 1]."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    scale = float(np.sqrt(height * width))
    frames = num_frames
    time = np.arange(frames) / fps

    # Torso: sway, roll and a slight bob.
    neck = np.stack(
        [width / 2 + 0.02 * scale * _smooth_noise(rng, time, (0.2, 0.33)),
         NECK_HEIGHT * height + 0.006 * scale * _smooth_noise(rng, time, (0.5, 0.8))], -1
    )  # fmt: skip
    roll = np.deg2rad(2.5) * _smooth_noise(rng, time, (0.15, 0.27))
    shoulder_offset = scale * np.array([SHOULDER_HALF_WIDTH, 0.03])
    right_shoulder = neck + _rotate(np.broadcast_to(shoulder_offset * [-1, 1], (frames, 2)), roll)
    left_shoulder = neck + _rotate(np.broadcast_to(shoulder_offset, (frames, 2)), roll)
    hip_offset = scale * np.array([HIP_HALF_WIDTH, HIP_BELOW_NECK])
    right_hip = neck + _rotate(np.broadcast_to(hip_offset * [-1, 1], (frames, 2)), roll)
    left_hip = neck + _rotate(np.broadcast_to(hip_offset, (frames, 2)), roll)

    # Beats: quick strokes of one or both hands, each with a nod.
    beat_count = rng.poisson(BEATS_PER_SECOND * time[-1] + 1)
    beat_times = np.sort(rng.uniform(0, time[-1] + 1 / fps, beat_count))
    beat_hands = rng.integers(0, 3, beat_count)  # 0 right, 1 left, 2 both
    stroke = np.exp(-(((time[:, None] - beat_times[None] + 0.1) / 0.1) ** 2))  # hand up just before the beat
    nod = np.exp(-(((time[:, None] - beat_times[None]) / 0.12) ** 2)).sum(-1)

    # Head: nods (pitch moves the face down), turns (features shift sideways), tilts with the torso.
    pitch = 0.35 * np.minimum(nod, 1.5) + 0.2 * _smooth_noise(rng, time, (0.3,))
    yaw = 0.25 * _smooth_noise(rng, time, (0.17, 0.31))
    tilt = roll + np.deg2rad(3) * _smooth_noise(rng, time, (0.23,))
    mouth_open = np.clip(0.5 + 0.6 * _smooth_noise(rng, time, (SYLLABLES_PER_SECOND, 2.7)), 0, 1)
    face_local = _face_template(mouth_open)
    face_local[:, 17:, 0] += yaw[:, None]  # inner features follow the head's turn, the contour does not
    face_local[:, :, 1] *= (1 - 0.08 * pitch)[:, None]
    face_size = scale * np.array([FACE_HALF_WIDTH, FACE_HALF_HEIGHT])
    face_centre = np.array([0.0, -FACE_CENTRE_ABOVE_NECK * scale]) + np.stack([np.zeros(frames), 0.02 * scale * pitch], -1)
    face = neck[:, None] + _rotate(face_centre[:, None] + face_local * face_size, tilt[:, None])

    # Hands: rest near the belly, raised in front of the chest during gesture phrases, plus beats.
    activity = np.clip(0.6 + 0.6 * _smooth_noise(rng, time, (0.12, 0.21)), 0, 1)
    wrists, elbows, hands = {}, {}, {}
    for side, shoulder, beat_code in ((-1.0, right_shoulder, 0), (1.0, left_shoulder, 1)):
        rest = neck + scale * np.array([side * 0.14, 0.4])
        raised = neck + scale * np.array([side * 0.12, 0.25])
        wander = scale * 0.08 * np.stack([_smooth_noise(rng, time, (0.4, 0.7)), _smooth_noise(rng, time, (0.35, 0.6))], -1)
        beat_lift = (stroke * np.isin(beat_hands, (beat_code, 2))[None]).sum(-1)
        target = rest + activity[:, None] * (raised - rest + wander) - scale * 0.06 * beat_lift[:, None] * [0, 1]
        # The elbow hangs by the side and moves out as the hand rises; the forearm, pointing partly at the
        # camera, is foreshortened by whatever the wrist's position implies.
        elbow_out = 0.05 + 0.08 * activity + 0.03 * _smooth_noise(rng, time, (0.3,))
        elbows[side] = shoulder + scale * np.stack([side * elbow_out, UPPER_ARM - 0.05 * activity], -1)
        wrists[side] = target
        forearm = wrists[side] - elbows[side]
        flex = np.deg2rad(25) * _smooth_noise(rng, time, (0.5, 0.9))
        pointing = _rotate(forearm / np.linalg.norm(forearm, axis=-1, keepdims=True), flex)
        curl = np.clip(0.35 + 0.4 * _smooth_noise(rng, time, (0.45, 0.8)), 0, 1)
        # The two hands mirror each other: the thumb's side flips with the body side.
        hands[side] = _hand_points(wrists[side], pointing, side, curl, scale)

    body = np.zeros((frames, BODY_POINTS, 2))
    body[:, 0] = face[:, 30]  # nose tip
    body[:, 1] = neck
    body[:, 2], body[:, 3], body[:, 4] = right_shoulder, elbows[-1.0], wrists[-1.0]
    body[:, 5], body[:, 6], body[:, 7] = left_shoulder, elbows[1.0], wrists[1.0]
    body[:, 8], body[:, 11] = right_hip, left_hip
    body[:, 9], body[:, 12] = right_hip + [0, 0.45 * scale], left_hip + [0, 0.45 * scale]
    body[:, 10], body[:, 13] = right_hip + [0, 0.9 * scale], left_hip + [0, 0.9 * scale]
    body[:, 14], body[:, 15] = face[:, 36:42].mean(1), face[:, 42:48].mean(1)
    ear_outward = scale * FACE_HALF_WIDTH * 0.08
    body[:, 16] = face[:, 0] + [-ear_outward, -0.1 * scale * FACE_HALF_HEIGHT]
    body[:, 17] = face[:, 16] + [ear_outward, -0.1 * scale * FACE_HALF_HEIGHT]
    hand_array = np.stack([hands[1.0], hands[-1.0]], axis=1)  # DWPose order: the person's left hand first

    pixels_to_unit = np.array([width, height], dtype=np.float64)
    arrays = {}
    for name, points, base_score in (("body", body, 0.9), ("hands", hand_array, 0.8), ("face", face, 0.9)):
        points = points + rng.normal(0, JITTER * scale, points.shape)
        normalised = points / pixels_to_unit
        score = np.clip(base_score + rng.normal(0, 0.04, points.shape[:-1]), 0, 1)
        inside = ((normalised >= 0) & (normalised <= 1)).all(-1)
        arrays[name] = normalised.astype(np.float32)
        arrays[f"{name}_score"] = np.where(inside, score, 0.0).astype(np.float32)
    # Motion blur: a hand now and then loses its detections for a few frames.
    for hand in range(2):
        for _ in range(rng.poisson(frames / 60)):
            start = rng.integers(0, frames)
            arrays["hands_score"][start : start + rng.integers(2, 6), hand] *= 0.2
    return WholeBodyKeypoints(**arrays, image_size=(int(height), int(width)))
