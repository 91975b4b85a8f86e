"""DWPose-style skeleton images: OpenPose-coloured body limbs, rainbow hand edges, white face points.

The look (limb pairs, colours, widths, radii, the 0.6 dimming of limbs before the joints are drawn)
follows DWPose's drawing, which is what UniAnimate's pose guider saw in training.
"""

from __future__ import annotations

import colorsys
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import cv2
import numpy as np

from iasa.pose.keypoints import WholeBodyKeypoints

# OpenPose-18 limbs as (from, to) body indices (nose, neck, right arm, left arm, legs, eyes, ears).
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# One colour per limb and per body point (RGB), the standard OpenPose palette.
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
# Hand edges: wrist to each finger's base, then along the finger (thumb, index, middle, ring, pinky).
HAND_EDGES = tuple(
    edge for finger in range(5) for edge in [(0, 4 * finger + 1)] + [(4 * finger + k, 4 * finger + k + 1) for k in range(1, 4)]
)
HAND_EDGE_COLORS = tuple(
    tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0))
    for index in range(len(HAND_EDGES))
)
LIMB_HALF_WIDTH = 4
BODY_POINT_RADIUS = 4
LIMB_DIMMING = 0.6
HAND_LINE_WIDTH = 2
HAND_POINT_RADIUS = 4
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_RADIUS = 3
FACE_POINT_COLOR = (255, 255, 255)
# Points with a lower score are not drawn (DWPose's detection threshold).
MIN_DRAW_SCORE = 0.3
# floor(value x LIMB_DIMMING) for every uint8 value: the dimming as one table look-up.
DIMMING_TABLE = (np.arange(256) * LIMB_DIMMING).astype(np.uint8)
# OpenCV drawing releases the GIL, so frames are drawn on a few threads at once.
DRAWING_THREADS = min(8, os.cpu_count() or 1)


def draw_pose_frame(keypoints: WholeBodyKeypoints, frame: int) -> np.ndarray:
    """The skeleton image (H, W, 3) uint8 RGB of one frame on a black background."""
    height, width = keypoints.image_size
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    _draw_into(canvas, keypoints, frame)
    return canvas


def _draw_into(canvas: np.ndarray, keypoints: WholeBodyKeypoints, frame: int) -> None:
    """Draw one frame's skeleton onto a black (H, W, 3) uint8 canvas, in place."""
    height, width = keypoints.image_size
    scale = np.array([width, height], dtype=np.float64)
    body = keypoints.body[frame] * scale
    body_visible = keypoints.body_score[frame] >= MIN_DRAW_SCORE
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
            cv2.circle(canvas, (int(point[0]), int(point[1])), BODY_POINT_RADIUS, color, thickness=-1)

    for hand, hand_score in zip(keypoints.hands[frame] * scale, keypoints.hands_score[frame]):
        visible = hand_score >= MIN_DRAW_SCORE
        for (start, end), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
            if visible[start] and visible[end]:
                cv2.line(canvas, _pixel(hand[start]), _pixel(hand[end]), color, thickness=HAND_LINE_WIDTH)
        for point in hand[visible]:
            cv2.circle(canvas, _pixel(point), HAND_POINT_RADIUS, HAND_POINT_COLOR, thickness=-1)

    face = keypoints.face[frame] * scale
    for point in face[keypoints.face_score[frame] >= MIN_DRAW_SCORE]:
        cv2.circle(canvas, _pixel(point), FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)


def iter_pose_frames(keypoints: WholeBodyKeypoints) -> Iterator[np.ndarray]:
    """The skeleton images one at a time (H, W, 3) uint8, for writing long videos without holding them all."""
    for frame in range(keypoints.num_frames):
        yield draw_pose_frame(keypoints, frame)


def draw_pose_frames(keypoints: WholeBodyKeypoints) -> np.ndarray:
    """The skeleton video (F, H, W, 3) uint8 RGB, black background."""
    height, width = keypoints.image_size
    frames = np.zeros((keypoints.num_frames, height, width, 3), dtype=np.uint8)
    with ThreadPoolExecutor(DRAWING_THREADS) as pool:
        list(pool.map(lambda index: _draw_into(frames[index], keypoints, index), range(keypoints.num_frames)))
    return frames


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(point[0]), int(point[1])
