"""Pixel masks of the face, the mouth and the hands in every video frame, from its keypoints.

Face and hands are the polygons of the sparse-attention regions (iasa.attention.regions: the hull of the
confident face landmarks, of each hand's confident points), drawn through iasa.train.region_loss's
``region_masks``; the mouth is the hull of the lip landmarks 48-67. Each region is then dilated by a disc
whose radius is a fraction of a body measure of that frame plus EDGE_PIXELS, because the synthetic renderer
draws every part larger than its landmarks by fractions of those same measures (iasa.synthetic.avatar),
with an outline and anti-aliased edges around it: the face outline is widened up to 1.12x, the mouth
scaled up to 1.35x about its centre, the palm padded by 0.2 palm lengths around the hand's points.

Keypoints count when their score is >= MIN_KEYPOINT_SCORE. Masks are not exclusive: a hand in front of the
face is in both the face and the hand mask, so each region's error is measured on all of its pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from iasa.attention.config import SparseAttentionConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.train.region_loss import region_masks

MIN_KEYPOINT_SCORE = 0.3  # as DWPose's drawing threshold and the renderer's
# iBUG-68 face landmarks: the temples (ends of the jaw contour), the lips, the mouth corners.
RIGHT_TEMPLE, LEFT_TEMPLE = 0, 16
LIPS = slice(48, 68)
MOUTH_CORNERS = (48, 54)
# Hand points: the wrist and the base of the middle finger (the palm length, the renderer's hand scale).
WRIST, MIDDLE_FINGER_BASE = 0, 9
# Dilation radius of each region, as a fraction of: the temple distance (face), the mouth corner
# distance (mouth), the palm length (each hand).
FACE_DILATION = 0.1
MOUTH_DILATION = 0.25
HAND_DILATION = 0.3
# On top, in pixels at any size: the outline and the anti-aliased edge the renderer draws around each part.
EDGE_PIXELS = 2
SHIFT = 4  # sub-pixel bits of the lip hull's coordinates (as the attention regions draw theirs)


def _frame_sizes(first: np.ndarray, second: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(F,) pixel distance between two points (F, 2) in frames where both are confident (ok (F,)), else 0."""
    return np.where(ok, np.linalg.norm(first - second, axis=-1), 0.0)


def _dilate(masks: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Grow each frame's mask (F, H, W) bool by a disc of that frame's radius (F,) in pixels, rounded up,
    plus EDGE_PIXELS; a radius of 0 (the part's size unknown) leaves the frame's mask as it is."""
    grown = masks.copy()
    for t, radius in enumerate(np.ceil(radii).astype(int)):
        if radius > 0 and masks[t].any():
            radius += EDGE_PIXELS
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            grown[t] = cv2.dilate(masks[t].astype(np.uint8), disc) > 0
    return grown


def _hull_masks(keypoints: WholeBodyKeypoints, name: str) -> np.ndarray:
    """(F, H, W) bool: one sparse-attention region (face, left_hand, right_hand), undilated."""
    sparse = SparseAttentionConfig(min_keypoint_confidence=MIN_KEYPOINT_SCORE)
    return region_masks(keypoints, [name], tuple(keypoints.image_size), sparse)[:, 0].numpy() > 0


def _lip_hulls(keypoints: WholeBodyKeypoints) -> np.ndarray:
    """(F, H, W) bool: the convex hull of each frame's confident lip landmarks (at least 3), undilated."""
    height, width = keypoints.image_size
    lips = keypoints.face[:, LIPS] * np.array([width, height])
    confident = keypoints.face_score[:, LIPS] >= MIN_KEYPOINT_SCORE
    masks = np.zeros((keypoints.num_frames, height, width), dtype=np.uint8)
    for t in range(keypoints.num_frames):
        if confident[t].sum() >= 3:
            points = np.round(lips[t][confident[t]] * (1 << SHIFT)).astype(np.int32)
            cv2.fillConvexPoly(masks[t], cv2.convexHull(points), 1, cv2.LINE_8, SHIFT)
    return masks > 0


def face_widths(keypoints: WholeBodyKeypoints) -> np.ndarray:
    """(F,) temple-to-temple distance in pixels (the renderer's face scale); 0 where a temple is not confident."""
    pixels = keypoints.face * np.array(keypoints.image_size[::-1])
    ok = (keypoints.face_score[:, [RIGHT_TEMPLE, LEFT_TEMPLE]] >= MIN_KEYPOINT_SCORE).all(axis=1)
    return _frame_sizes(pixels[:, RIGHT_TEMPLE], pixels[:, LEFT_TEMPLE], ok)


def face_mask(keypoints: WholeBodyKeypoints) -> np.ndarray:
    """(F, H, W) bool: the face landmark hull (head points without a face), grown by FACE_DILATION."""
    return _dilate(_hull_masks(keypoints, "face"), FACE_DILATION * face_widths(keypoints))


def mouth_mask(keypoints: WholeBodyKeypoints) -> np.ndarray:
    """(F, H, W) bool: the hull of the lip landmarks 48-67, grown by MOUTH_DILATION mouth widths (corner to
    corner; not grown where a corner is not confident)."""
    pixels = keypoints.face * np.array(keypoints.image_size[::-1])
    corners_ok = (keypoints.face_score[:, list(MOUTH_CORNERS)] >= MIN_KEYPOINT_SCORE).all(axis=1)
    widths = _frame_sizes(pixels[:, MOUTH_CORNERS[0]], pixels[:, MOUTH_CORNERS[1]], corners_ok)
    return _dilate(_lip_hulls(keypoints), MOUTH_DILATION * widths)


def hand_mask(keypoints: WholeBodyKeypoints) -> np.ndarray:
    """(F, H, W) bool: both hands, each the hull of its confident points grown by HAND_DILATION palm lengths
    (wrist to middle finger base; not grown where either is not confident)."""
    pixels = keypoints.hands * np.array(keypoints.image_size[::-1])
    confident = keypoints.hands_score >= MIN_KEYPOINT_SCORE
    masks = np.zeros((keypoints.num_frames, *keypoints.image_size), dtype=bool)
    for side, name in enumerate(("left_hand", "right_hand")):
        palm_ok = confident[:, side, WRIST] & confident[:, side, MIDDLE_FINGER_BASE]
        palms = _frame_sizes(pixels[:, side, WRIST], pixels[:, side, MIDDLE_FINGER_BASE], palm_ok)
        masks |= _dilate(_hull_masks(keypoints, name), HAND_DILATION * palms)
    return masks


def region_pixel_masks(keypoints: WholeBodyKeypoints) -> dict[str, np.ndarray]:
    """{"face", "mouth", "hands"} -> (F, H, W) bool masks at the keypoints' image size."""
    return {"face": face_mask(keypoints), "mouth": mouth_mask(keypoints), "hands": hand_mask(keypoints)}
