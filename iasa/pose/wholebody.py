"""From the smplx joint layout (144 points with use_face_contour=True) to COCO-WholeBody-133 and DWPose.

COCO-WholeBody-133: 17 body, 6 feet, 68 face, 21 left hand, 21 right hand points. The DWPose layout
(iasa.pose.keypoints) keeps the feet, the face and both hands and turns the 17 COCO body points into the
18 OpenPose points, with the neck as the midpoint of the shoulders.
"""

from __future__ import annotations

import numpy as np

# smplx joint index of each COCO-WholeBody point (smplx.joint_names.JOINT_NAMES gives the names).
COCO_BODY_FROM_SMPLX = [55, 57, 56, 59, 58, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]
COCO_FEET_FROM_SMPLX = [60, 61, 62, 63, 64, 65]
COCO_FACE_FROM_SMPLX = [*range(127, 144), *range(76, 127)]
COCO_LEFT_HAND_FROM_SMPLX = [20, 37, 38, 39, 66, 25, 26, 27, 67, 28, 29, 30, 68, 34, 35, 36, 69, 31, 32, 33, 70]
COCO_RIGHT_HAND_FROM_SMPLX = [21, 52, 53, 54, 71, 40, 41, 42, 72, 43, 44, 45, 73, 49, 50, 51, 74, 46, 47, 48, 75]
COCO_WHOLEBODY_FROM_SMPLX = np.array(
    COCO_BODY_FROM_SMPLX + COCO_FEET_FROM_SMPLX + COCO_FACE_FROM_SMPLX
    + COCO_LEFT_HAND_FROM_SMPLX + COCO_RIGHT_HAND_FROM_SMPLX
)  # fmt: skip

# Where each part starts in COCO-WholeBody-133.
COCO_FEET_START, COCO_FACE_START, COCO_LEFT_HAND_START, COCO_RIGHT_HAND_START = 17, 23, 91, 112
# The COCO body point of each OpenPose-18 point (iasa.pose.keypoints.BODY_NAMES); None = the neck.
OPENPOSE_FROM_COCO_BODY = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
_LEFT_SHOULDER, _RIGHT_SHOULDER = 5, 6


def smplx_to_coco_wholebody(points: np.ndarray) -> np.ndarray:
    """(..., 144, C) points in the smplx layout -> (..., 133, C) in COCO-WholeBody order."""
    return points[..., COCO_WHOLEBODY_FROM_SMPLX, :]


def coco_wholebody_to_dwpose(points: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """COCO-WholeBody (..., 133, C) points and (..., 133) scores -> the DWPose parts by the field names of
    iasa.pose.keypoints.WholeBodyKeypoints: body (..., 18, C), body_score (..., 18), feet (..., 6, C),
    feet_score (..., 6), hands (..., 2, 21, C) with index 0 the left hand, hands_score (..., 2, 21),
    face (..., 68, C), face_score (..., 68).

    The neck is the midpoint of the shoulders; its score is the smaller of the two shoulder scores.
    """
    shoulders = [_LEFT_SHOULDER, _RIGHT_SHOULDER]
    neck = points[..., shoulders, :].mean(axis=-2)
    neck_score = scores[..., shoulders].min(axis=-1)
    body = np.stack(
        [neck if coco is None else points[..., coco, :] for coco in OPENPOSE_FROM_COCO_BODY], axis=-2
    )
    body_score = np.stack(
        [neck_score if coco is None else scores[..., coco] for coco in OPENPOSE_FROM_COCO_BODY], axis=-1
    )
    feet = slice(COCO_FEET_START, COCO_FEET_START + 6)
    left = slice(COCO_LEFT_HAND_START, COCO_LEFT_HAND_START + 21)
    right = slice(COCO_RIGHT_HAND_START, COCO_RIGHT_HAND_START + 21)
    face = slice(COCO_FACE_START, COCO_FACE_START + 68)
    return {
        "body": body,
        "body_score": body_score,
        "feet": points[..., feet, :],
        "feet_score": scores[..., feet],
        "hands": np.stack([points[..., left, :], points[..., right, :]], axis=-3),
        "hands_score": np.stack([scores[..., left], scores[..., right]], axis=-2),
        "face": points[..., face, :],
        "face_score": scores[..., face],
    }
