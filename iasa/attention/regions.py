"""Local mask: body regions from keypoints, rasterised in pixels and pooled to Wan's token grid.

Each region is one small drawing function of one video frame's keypoints (in canvas pixels):
face -> convex hull of the 68 face points (head points nose/eyes/ears when the face was not detected);
left_hand / right_hand -> convex hull of that hand's points; hands -> both hands as one region;
arms -> thick shoulder-shoulder, shoulder-elbow and elbow-wrist limbs (width = limb_width x shoulder
width); torso -> the shoulders-hips quadrilateral (down to the image bottom when the hips are not seen).

A region is drawn at pixel resolution on a canvas of (h x stride, w x stride) pixels, pooled to tokens
by area (a token is in the region when at least ``min_token_coverage`` of its pixels are), OR-ed over
the video frames of each latent frame, then grown by ``dilation_tokens`` (a square of side 2d + 1).
Where regions overlap, the one listed first in ``config.regions`` wins. Region ids are 1..R in config
order; 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from einops import rearrange

from iasa.attention.config import SparseAttentionConfig
from iasa.attention.latent_frames import latent_frame_groups
from iasa.attention.layout import BACKGROUND
from iasa.pose.keypoints import BODY_NAMES, WholeBodyKeypoints

REGION_NAMES = ("face", "left_hand", "right_hand", "hands", "arms", "torso")
HEAD_INDICES = tuple(BODY_NAMES.index(n) for n in ("nose", "right_eye", "left_eye", "right_ear", "left_ear"))
RIGHT_SHOULDER, LEFT_SHOULDER = BODY_NAMES.index("right_shoulder"), BODY_NAMES.index("left_shoulder")
RIGHT_HIP, LEFT_HIP = BODY_NAMES.index("right_hip"), BODY_NAMES.index("left_hip")
LIMBS = tuple(
    (BODY_NAMES.index(a), BODY_NAMES.index(b))
    for a, b in (
        ("right_shoulder", "left_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    )
)  # fmt: skip
LEFT_HAND, RIGHT_HAND = 0, 1  # DWPose hand order: the person's left hand first
# Sub-pixel precision of cv2 drawing: coordinates are passed as integers x 2^SHIFT.
SHIFT = 4
FILL = 255


@dataclass
class FramePoints:
    """One video frame's keypoints in canvas pixels, with which of them are confident.

    body (18, 2), body_ok (18,), hands (2, 21, 2), hands_ok (2, 21), face (68, 2), face_ok (68,);
    limb_width: the arm limb thickness in pixels for this frame."""

    body: np.ndarray
    body_ok: np.ndarray
    hands: np.ndarray
    hands_ok: np.ndarray
    face: np.ndarray
    face_ok: np.ndarray
    limb_width: float


# Pixel box (x0, y0, x1, y1), end exclusive, that holds everything a drawer painted.
Box = tuple[float, float, float, float]


def _fixed_point(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SHIFT)).astype(np.int32)


def _box(points: np.ndarray, margin: float = 1.0) -> Box:
    low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
    return float(low[0]), float(low[1]), float(high[0]) + 1, float(high[1]) + 1


def _union(boxes: list[Box | None]) -> Box | None:
    drawn = [box for box in boxes if box is not None]
    if not drawn:
        return None
    x0, y0, x1, y1 = zip(*drawn)
    return min(x0), min(y0), max(x1), max(y1)


def _fill_hull(canvas: np.ndarray, points: np.ndarray) -> Box | None:
    if len(points) < 3:
        return None
    hull = cv2.convexHull(_fixed_point(points))
    cv2.fillConvexPoly(canvas, hull, FILL, lineType=cv2.LINE_8, shift=SHIFT)
    return _box(points)


def draw_face(canvas: np.ndarray, frame: FramePoints) -> Box | None:
    if frame.face_ok.sum() >= 3:
        return _fill_hull(canvas, frame.face[frame.face_ok])
    head = np.asarray(HEAD_INDICES)
    return _fill_hull(canvas, frame.body[head][frame.body_ok[head]])


def draw_hand(canvas: np.ndarray, frame: FramePoints, side: int) -> Box | None:
    return _fill_hull(canvas, frame.hands[side][frame.hands_ok[side]])


def draw_both_hands(canvas: np.ndarray, frame: FramePoints) -> Box | None:
    return _union([draw_hand(canvas, frame, LEFT_HAND), draw_hand(canvas, frame, RIGHT_HAND)])


def draw_arms(canvas: np.ndarray, frame: FramePoints) -> Box | None:
    thickness = max(1, int(round(frame.limb_width)))
    boxes: list[Box | None] = []
    for start, end in LIMBS:
        if frame.body_ok[start] and frame.body_ok[end]:
            a, b = _fixed_point(frame.body[[start, end]])
            cv2.line(canvas, tuple(map(int, a)), tuple(map(int, b)), FILL, thickness, cv2.LINE_8, SHIFT)
            boxes.append(_box(frame.body[[start, end]], margin=thickness / 2 + 1))
    return _union(boxes)


def draw_torso(canvas: np.ndarray, frame: FramePoints) -> Box | None:
    if not (frame.body_ok[RIGHT_SHOULDER] and frame.body_ok[LEFT_SHOULDER]):
        return None
    shoulders = frame.body[[RIGHT_SHOULDER, LEFT_SHOULDER]]
    if frame.body_ok[RIGHT_HIP] and frame.body_ok[LEFT_HIP]:
        lower = frame.body[[LEFT_HIP, RIGHT_HIP]]
    else:  # a talking-head crop cuts the body off: the torso runs down to the bottom edge
        lower = np.stack([shoulders[1], shoulders[0]]).copy()
        lower[:, 1] = canvas.shape[0]
    return _fill_hull(canvas, np.concatenate([shoulders, lower]))


def _token_window(box: Box, grid_size: tuple[int, int], stride: int) -> tuple[slice, slice]:
    """The token rows and columns that a pixel box touches, clipped to the grid."""
    x0, y0, x1, y1 = box
    grid_h, grid_w = grid_size
    rows = slice(min(max(int(y0) // stride, 0), grid_h), min(max(-(-int(np.ceil(y1)) // stride), 0), grid_h))
    cols = slice(min(max(int(x0) // stride, 0), grid_w), min(max(-(-int(np.ceil(x1)) // stride), 0), grid_w))
    return rows, cols


REGION_DRAWERS: dict[str, Callable[[np.ndarray, FramePoints], Box | None]] = {
    "face": draw_face,
    "left_hand": lambda canvas, frame: draw_hand(canvas, frame, LEFT_HAND),
    "right_hand": lambda canvas, frame: draw_hand(canvas, frame, RIGHT_HAND),
    "hands": draw_both_hands,
    "arms": draw_arms,
    "torso": draw_torso,
}


def validate_regions(regions: tuple[str, ...] | list[str]) -> None:
    unknown = [name for name in regions if name not in REGION_DRAWERS]
    if unknown:
        raise ValueError(f"unknown regions {unknown} in config.regions; choose from {REGION_NAMES}")
    if len(set(regions)) != len(regions):
        raise ValueError(f"config.regions lists a region twice: {list(regions)}")
    if "hands" in regions and ({"left_hand", "right_hand"} & set(regions)):
        raise ValueError("config.regions: use either 'hands' (one region) or 'left_hand'/'right_hand', not both")


def frame_points(keypoints: WholeBodyKeypoints, canvas_size: tuple[int, int], config: SparseAttentionConfig) -> list[FramePoints]:
    """Per video frame: keypoints scaled to a canvas of (height, width) pixels, and the limb width
    (from that frame's shoulders, else the clip's median shoulder width, else 0: no arms drawn)."""
    height, width = canvas_size
    scale = np.array([width, height], dtype=np.float64)
    threshold = config.min_keypoint_confidence
    body = keypoints.body * scale
    body_ok = keypoints.body_score >= threshold
    shoulders_ok = body_ok[:, RIGHT_SHOULDER] & body_ok[:, LEFT_SHOULDER]
    shoulder_width = np.linalg.norm(body[:, RIGHT_SHOULDER] - body[:, LEFT_SHOULDER], axis=-1)
    fallback = float(np.median(shoulder_width[shoulders_ok])) if shoulders_ok.any() else 0.0
    limb_width = config.limb_width * np.where(shoulders_ok, shoulder_width, fallback)
    return [
        FramePoints(
            body=body[t], body_ok=body_ok[t],
            hands=keypoints.hands[t] * scale, hands_ok=keypoints.hands_score[t] >= threshold,
            face=keypoints.face[t] * scale, face_ok=keypoints.face_score[t] >= threshold,
            limb_width=float(limb_width[t]),
        )  # fmt: skip
        for t in range(keypoints.num_frames)
    ]


def region_token_masks(
    keypoints: WholeBodyKeypoints, config: SparseAttentionConfig, grid_size: tuple[int, int]
) -> np.ndarray:
    """Which tokens of each latent frame lie in each region, before priorities: (T, R, h, w) bool."""
    validate_regions(config.regions)
    if not 0.0 < config.min_token_coverage <= 1.0:
        raise ValueError(f"min_token_coverage must be in (0, 1], got {config.min_token_coverage}")
    if config.dilation_tokens < 0:
        raise ValueError(f"dilation_tokens must be >= 0, got {config.dilation_tokens}")
    grid_h, grid_w = grid_size
    stride = config.token_stride
    canvas_size = (grid_h * stride, grid_w * stride)
    frames = frame_points(keypoints, canvas_size, config)
    groups = latent_frame_groups(keypoints.num_frames)
    threshold = config.min_token_coverage * FILL
    masks = np.zeros((len(groups), len(config.regions), grid_h, grid_w), dtype=bool)
    canvas = np.zeros(canvas_size, dtype=np.uint8)
    for latent, video_frames in enumerate(groups):
        for region, name in enumerate(config.regions):
            for t in video_frames:
                box = REGION_DRAWERS[name](canvas, frames[t])
                if box is None:
                    continue
                # Pool only the tokens under what was drawn: regions cover a few % of the frame.
                rows, cols = _token_window(box, grid_size, stride)
                pixels = canvas[rows.start * stride : rows.stop * stride, cols.start * stride : cols.stop * stride]
                if pixels.size:
                    # INTER_AREA over an integer factor is the mean over each token's stride x stride pixels.
                    size = (cols.stop - cols.start, rows.stop - rows.start)
                    coverage = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
                    masks[latent, region, rows, cols] |= coverage >= threshold
                # The box holds everything drawn, so clearing its window clears the canvas.
                pixels.fill(0)
    if config.dilation_tokens > 0:
        side = 2 * config.dilation_tokens + 1
        kernel = np.ones((side, side), dtype=np.uint8)
        for latent in range(masks.shape[0]):
            for region in range(masks.shape[1]):
                masks[latent, region] = cv2.dilate(masks[latent, region].astype(np.uint8), kernel).astype(bool)
    return masks


def label_tokens(masks: np.ndarray) -> np.ndarray:
    """(T, R, h, w) bool -> (T, h * w) int64 region ids 1..R, the lowest region index winning; 0 elsewhere."""
    frames, regions, grid_h, grid_w = masks.shape
    labels = np.full((frames, grid_h, grid_w), BACKGROUND, dtype=np.int64)
    for region in reversed(range(regions)):
        labels[masks[:, region]] = region + 1
    return rearrange(labels, "t h w -> t (h w)")
