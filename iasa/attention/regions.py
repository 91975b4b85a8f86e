"""Local mask: body regions from keypoints, rasterised in pixels and pooled to Wan's token grid.

Each region is one small drawing function of one video frame's shapes (its keypoints in canvas pixels):
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
from iasa.attention.layout import BACKGROUND
from iasa.pose.keypoints import BODY_NAMES, WholeBodyKeypoints
from iasa.video.latent_grid import latent_frame_groups

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


# Pixel box (x0, y0, x1, y1), end exclusive, that holds everything a drawer painted.
Box = tuple[float, float, float, float]
# A polygon in OpenCV's fixed point (coordinates x 2^SHIFT) with the box of its points; None: not drawn.
Polygon = tuple[np.ndarray, Box]
# A limb segment: end points in fixed point and its box (the thickness is the frame's).
Segment = tuple[tuple[int, int], tuple[int, int], Box]


@dataclass
class FrameShapes:
    """One video frame's shapes in canvas pixels, from its confident keypoints (computed for the whole clip
    at once in frame_shapes, so the drawers only call OpenCV).

    face: hull of the face points, else of the head points; hands: one hull per hand (DWPose order);
    limbs: the arm segments whose two joints are confident; limb_thickness: their width in pixels;
    torso: the shoulders-hips quadrilateral (to the canvas bottom without hips), None without both shoulders."""

    face: Polygon | None
    hands: tuple[Polygon | None, Polygon | None]
    limbs: list[Segment]
    limb_thickness: int
    torso: Polygon | None


def _fixed_point(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SHIFT)).astype(np.int32)


def _boxes(points: np.ndarray, ok: np.ndarray, margin: np.ndarray | float = 1.0) -> list[Box]:
    """Per frame: the box of the confident points. points (F, P, 2), ok (F, P), margin scalar or (F,)."""
    margin = np.broadcast_to(np.asarray(margin, dtype=np.float64), ok.shape[:1])[:, None]
    low = np.where(ok[..., None], points, np.inf).min(axis=1) - margin
    high = np.where(ok[..., None], points, -np.inf).max(axis=1) + margin + 1
    return [tuple(box) for box in np.concatenate([low, high], axis=1).tolist()]


def _polygons(points: np.ndarray, ok: np.ndarray) -> list[Polygon | None]:
    """Per frame: the confident points (F, P, 2) in fixed point with their box; None under 3 points."""
    fixed, boxes, enough = _fixed_point(points), _boxes(points, ok), ok.sum(axis=1) >= 3
    return [(fixed[t][ok[t]], boxes[t]) if enough[t] else None for t in range(len(points))]


def _union(boxes: list[Box | None]) -> Box | None:
    drawn = [box for box in boxes if box is not None]
    if not drawn:
        return None
    x0, y0, x1, y1 = zip(*drawn)
    return min(x0), min(y0), max(x1), max(y1)


def _fill(canvas: np.ndarray, polygon: Polygon | None) -> Box | None:
    if polygon is None:
        return None
    points, box = polygon
    cv2.fillConvexPoly(canvas, cv2.convexHull(points), FILL, lineType=cv2.LINE_8, shift=SHIFT)
    return box


def draw_face(canvas: np.ndarray, frame: FrameShapes) -> Box | None:
    return _fill(canvas, frame.face)


def draw_hand(canvas: np.ndarray, frame: FrameShapes, side: int) -> Box | None:
    return _fill(canvas, frame.hands[side])


def draw_both_hands(canvas: np.ndarray, frame: FrameShapes) -> Box | None:
    return _union([draw_hand(canvas, frame, LEFT_HAND), draw_hand(canvas, frame, RIGHT_HAND)])


def draw_arms(canvas: np.ndarray, frame: FrameShapes) -> Box | None:
    for start, end, _ in frame.limbs:
        cv2.line(canvas, start, end, FILL, frame.limb_thickness, cv2.LINE_8, SHIFT)
    return _union([box for _, _, box in frame.limbs])


def draw_torso(canvas: np.ndarray, frame: FrameShapes) -> Box | None:
    return _fill(canvas, frame.torso)


def _token_window(box: Box, grid_size: tuple[int, int], stride: int) -> tuple[slice, slice]:
    """The token rows and columns that a pixel box touches, clipped to the grid."""
    x0, y0, x1, y1 = box
    grid_h, grid_w = grid_size
    rows = slice(min(max(int(y0) // stride, 0), grid_h), min(max(-(-int(np.ceil(y1)) // stride), 0), grid_h))
    cols = slice(min(max(int(x0) // stride, 0), grid_w), min(max(-(-int(np.ceil(x1)) // stride), 0), grid_w))
    return rows, cols


REGION_DRAWERS: dict[str, Callable[[np.ndarray, FrameShapes], Box | None]] = {
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


def frame_shapes(
    keypoints: WholeBodyKeypoints, canvas_size: tuple[int, int], config: SparseAttentionConfig
) -> list[FrameShapes]:
    """Per video frame: its shapes on a canvas of (height, width) pixels. The limb width comes from that
    frame's shoulders, else the clip's median shoulder width, else 0 (1-pixel limbs)."""
    height, width = canvas_size
    scale = np.array([width, height], dtype=np.float64)
    threshold = config.min_keypoint_confidence
    body, body_ok = keypoints.body * scale, keypoints.body_score >= threshold
    hands, hands_ok = keypoints.hands * scale, keypoints.hands_score >= threshold
    face, face_ok = keypoints.face * scale, keypoints.face_score >= threshold
    frames = range(keypoints.num_frames)

    head = np.asarray(HEAD_INDICES)
    face_polygons, head_polygons = _polygons(face, face_ok), _polygons(body[:, head], body_ok[:, head])
    use_face = face_ok.sum(axis=1) >= 3
    faces = [face_polygons[t] if use_face[t] else head_polygons[t] for t in frames]
    left_hands, right_hands = (_polygons(hands[:, side], hands_ok[:, side]) for side in (LEFT_HAND, RIGHT_HAND))

    shoulders_ok = body_ok[:, RIGHT_SHOULDER] & body_ok[:, LEFT_SHOULDER]
    hips_ok = body_ok[:, RIGHT_HIP] & body_ok[:, LEFT_HIP]
    shoulders = body[:, [RIGHT_SHOULDER, LEFT_SHOULDER]]
    # Without hips (a talking-head crop cuts the body off) the torso runs down to the bottom edge.
    bottom = np.stack([shoulders[..., 0], np.full(shoulders.shape[:2], float(height))], axis=-1)
    lower = np.where(hips_ok[:, None, None], body[:, [RIGHT_HIP, LEFT_HIP]], bottom)[:, ::-1]
    torsos = _polygons(np.concatenate([shoulders, lower], axis=1), np.repeat(shoulders_ok[:, None], 4, axis=1))
    shoulder_width = np.linalg.norm(body[:, RIGHT_SHOULDER] - body[:, LEFT_SHOULDER], axis=-1)
    fallback = float(np.median(shoulder_width[shoulders_ok])) if shoulders_ok.any() else 0.0
    limb_width = config.limb_width * np.where(shoulders_ok, shoulder_width, fallback)
    thickness = np.maximum(1, np.round(limb_width)).astype(int)
    limb_ends = body[:, list(LIMBS)]  # (F, limbs, 2 ends, 2)
    limb_ok = body_ok[:, list(LIMBS)].all(axis=-1)  # (F, limbs)
    both_ends = np.ones(limb_ends.shape[:1] + (2,), dtype=bool)
    limb_boxes = [_boxes(limb_ends[:, i], both_ends, thickness / 2 + 1) for i in range(len(LIMBS))]
    limb_fixed = _fixed_point(limb_ends).tolist()
    limbs = [
        [(tuple(limb_fixed[t][i][0]), tuple(limb_fixed[t][i][1]), limb_boxes[i][t]) for i in np.flatnonzero(limb_ok[t])]
        for t in frames
    ]
    return [
        FrameShapes(
            face=faces[t],
            hands=(left_hands[t], right_hands[t]),
            limbs=limbs[t],
            limb_thickness=int(thickness[t]),
            torso=torsos[t],
        )
        for t in frames
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
    frames = frame_shapes(keypoints, canvas_size, config)
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
