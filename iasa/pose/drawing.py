"""Pose images as UniAnimate's pose guider saw them in training: DWPose skeletons, channels reversed.

What UniAnimate draws (ali-vilab/UniAnimate-DiT, dwpose/util.py, called by run_align_pose.py for inference
and by prepare_training_data.py for training), in this order on a black canvas:
- draw_body_and_foot: 20 points, the 18 OpenPose body points and each foot's toes (midpoint of its big and
  small toe, iasa.pose.keypoints). 19 limbs as filled ellipses of half-width 4 (stickwidth): the 17
  OpenPose limbs, then left ankle -> left toes and right ankle -> right toes. Then the whole canvas is
  dimmed to floor(0.6 x value), and the points are drawn on top at full colour, radius 4.
- draw_handpose: per hand 20 edges, 2 pixels wide, coloured around the HSV hue circle, then the 21 points
  (radius 4, one colour).
- draw_facepose, in the "face" style only: the 68 points, white, radius 3.

Channel order. Those scripts write the canvas with cv2.imwrite / cv2.imencode, which take the array as
BGR (run_align_pose.py: cv2.imwrite of every pose frame and of pose.jpg; prepare_training_data.py:
cv2.imencode('.jpg', ...) into dw_pose_with_foot_wo_face.pkl), and UniAnimate reads the files back with PIL,
as RGB (inference_unianimate_wan_*.py: Image.open of the frames and pose.jpg; train_unianimate_wan.py:
Image.open(BytesIO(...)) of the pickled frames). So its guider learned every palette colour with its
channels reversed: the neck -> right shoulder limb, (255, 0, 0) in util.py, dimmed to (153, 0, 0), reached
it as RGB (0, 0, 153). The palettes below are written as util.py writes them (canvas order) and
`_as_guider_sees` reverses each colour once, which is the same as reversing the channels of the finished
image (every drawing step treats the channels alike). So these images are RGB exactly as the guider saw
them, JPEG compression aside, for every consumer: the inference pose video, the reference pose, the
data_process cache and with it training. LoRA files and cached training clips name this order
iasa.pose.style.POSE_CHANNEL_ORDER ("bgr").

Visibility as in UniAnimate's pose extraction: a body point (and a toe point, from both its toes) is drawn
when its score is above 0.3; a hand or face point when its score is at least 0.3 and its pixel is off the
first row and column (util.py's ``x > eps and y > eps`` on integer pixels).
"""

from __future__ import annotations

import colorsys
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import cv2
import numpy as np

from iasa.pose.keypoints import LEFT_ANKLE, LEFT_TOES, RIGHT_ANKLE, RIGHT_TOES, WholeBodyKeypoints
from iasa.pose.style import FACE_STYLE, check_pose_style

Color = tuple[int, int, int]

# The 19 limbs of draw_body_and_foot as (from, to) indices of the 20 body-and-toe points: neck -> shoulders,
# arms, neck -> hips, legs, neck -> nose, eyes, ears, then the ankle -> toes limbs.
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (LEFT_ANKLE, LEFT_TOES), (RIGHT_ANKLE, RIGHT_TOES),
)  # fmt: skip
# util.py's colours (canvas order): limb i and point i take colour i (the OpenPose palette, then the toes').
BODY_PALETTE = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85), (170, 255, 255), (255, 255, 0),
)  # fmt: skip
# Hand edges: wrist to each finger's base, then along the finger (thumb, index, middle, ring, pinky).
HAND_EDGES = tuple(
    edge for finger in range(5) for edge in [(0, 4 * finger + 1)] + [(4 * finger + k, 4 * finger + k + 1) for k in range(1, 4)]
)
# Edge i: hue i / 20 at full saturation and value, x 255; OpenCV rounds the float colour to the nearest integer.
HAND_EDGE_PALETTE = tuple(
    tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0))
    for index in range(len(HAND_EDGES))
)
HAND_POINT_PALETTE = (0, 0, 255)
FACE_POINT_PALETTE = (255, 255, 255)
LIMB_HALF_WIDTH = 4  # util.py's stickwidth
BODY_POINT_RADIUS = 4
LIMB_DIMMING = 0.6
HAND_LINE_WIDTH = 2
HAND_POINT_RADIUS = 4
FACE_POINT_RADIUS = 3
# DWPose's detection threshold (see the module docstring for which side of it counts as detected).
MIN_DRAW_SCORE = 0.3
# floor(value x LIMB_DIMMING) for every uint8 value: the dimming as one table look-up.
DIMMING_TABLE = (np.arange(256) * LIMB_DIMMING).astype(np.uint8)
# OpenCV drawing releases the GIL, so frames are drawn on a few threads at once.
DRAWING_THREADS = min(8, os.cpu_count() or 1)


def _as_guider_sees(colors: Sequence[Color]) -> tuple[Color, ...]:
    """Canvas-order colours as the guider saw them: channels reversed (written as BGR, read as RGB)."""
    return tuple((b, g, r) for r, g, b in colors)


BODY_COLORS = _as_guider_sees(BODY_PALETTE)
HAND_EDGE_COLORS = _as_guider_sees(HAND_EDGE_PALETTE)
(HAND_POINT_COLOR,) = _as_guider_sees([HAND_POINT_PALETTE])
(FACE_POINT_COLOR,) = _as_guider_sees([FACE_POINT_PALETTE])


def _draw_into(
    canvas: np.ndarray,
    keypoints: WholeBodyKeypoints,
    body_and_toes: tuple[np.ndarray, np.ndarray],
    frame: int,
    style: str,
) -> None:
    """Draw one frame's skeleton onto a black (H, W, 3) uint8 canvas, in place; body_and_toes is
    keypoints.body_and_toes() (computed once per clip)."""
    height, width = keypoints.image_size
    scale = np.array([width, height], dtype=np.float64)
    body = body_and_toes[0][frame] * scale
    body_visible = body_and_toes[1][frame] > MIN_DRAW_SCORE
    for (start, end), color in zip(BODY_LIMBS, BODY_COLORS):
        if not (body_visible[start] and body_visible[end]):
            continue
        (x0, y0), (x1, y1) = body[start], body[end]
        length = math.hypot(x1 - x0, y1 - y0)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        polygon = cv2.ellipse2Poly(
            (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, color)
    cv2.LUT(canvas, DIMMING_TABLE, dst=canvas)
    for point, visible, color in zip(body, body_visible, BODY_COLORS):
        if visible:
            cv2.circle(canvas, _pixel(point), BODY_POINT_RADIUS, color, thickness=-1)

    for hand, hand_score in zip(keypoints.hands[frame] * scale, keypoints.hands_score[frame]):
        drawn = _drawn_points(hand, hand_score)
        for (start, end), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
            if drawn[start] and drawn[end]:
                cv2.line(canvas, _pixel(hand[start]), _pixel(hand[end]), color, thickness=HAND_LINE_WIDTH)
        for point in hand[drawn]:
            cv2.circle(canvas, _pixel(point), HAND_POINT_RADIUS, HAND_POINT_COLOR, thickness=-1)

    if style == FACE_STYLE:
        face = keypoints.face[frame] * scale
        for point in face[_drawn_points(face, keypoints.face_score[frame])]:
            cv2.circle(canvas, _pixel(point), FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)


def _drawn_points(pixels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(P,) which hand or face points util.py draws: detected, and not on the first pixel row or column."""
    return (scores >= MIN_DRAW_SCORE) & (pixels.astype(np.int64) > 0).all(axis=-1)


def iter_pose_frames(keypoints: WholeBodyKeypoints, style: str) -> Iterator[np.ndarray]:
    """The pose images one at a time (H, W, 3) uint8, for writing long videos without holding them all."""
    check_pose_style(style)
    height, width = keypoints.image_size
    body_and_toes = keypoints.body_and_toes()
    for frame in range(keypoints.num_frames):
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        _draw_into(canvas, keypoints, body_and_toes, frame, style)
        yield canvas


def draw_pose_frames(keypoints: WholeBodyKeypoints, style: str) -> np.ndarray:
    """The pose video (F, H, W, 3) uint8 RGB in ``style`` (iasa.pose.style), black background."""
    check_pose_style(style)
    height, width = keypoints.image_size
    frames = np.zeros((keypoints.num_frames, height, width, 3), dtype=np.uint8)
    body_and_toes = keypoints.body_and_toes()
    with ThreadPoolExecutor(DRAWING_THREADS) as pool:
        list(pool.map(lambda t: _draw_into(frames[t], keypoints, body_and_toes, t, style), range(keypoints.num_frames)))
    return frames


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(point[0]), int(point[1])
