"""Laying a driving pose onto a reference pose in 2D: a least-squares similarity of point sets (Umeyama's
method without reflections), or UniAnimate's limb-by-limb retargeting of a whole-body pose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity2D:
    """x -> scale * rotation @ x + translation for 2D points."""

    scale: float
    rotation: np.ndarray  # (2, 2), det +1
    translation: np.ndarray  # (2,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) -> (..., 2)."""
        return self.scale * points @ self.rotation.T + self.translation


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity2D:
    """The similarity that maps ``source`` (N, 2) closest to ``target`` (N, 2) in the least-squares sense.

    Needs N >= 2 distinct source points (a similarity has four degrees of freedom).
    """
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"expected two (N, 2) point sets, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if len(source) < 2 or source_variance < 1e-12:
        raise ValueError("need at least two distinct points to fit a similarity transform")
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return Similarity2D(scale=scale, rotation=rotation, translation=translation)


# OpenPose-18 body indices (iasa.pose.keypoints.BODY_NAMES).
NOSE, NECK, RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST, LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST = range(8)
RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE, LEFT_HIP, LEFT_KNEE, LEFT_ANKLE, RIGHT_EYE, LEFT_EYE, RIGHT_EAR, LEFT_EAR = range(8, 18)
# The limbs UniAnimate's run_align_pose.py gives the reference's lengths, as (parent, child), parents first
# (the neck is the root). The hips have no limb: they keep their place relative to the neck after the
# torso scale, and the legs hang from them.
LIMBS = (
    (NECK, NOSE), (NECK, RIGHT_SHOULDER), (NECK, LEFT_SHOULDER), (RIGHT_SHOULDER, RIGHT_ELBOW),
    (RIGHT_ELBOW, RIGHT_WRIST), (LEFT_SHOULDER, LEFT_ELBOW), (LEFT_ELBOW, LEFT_WRIST), (NOSE, RIGHT_EYE),
    (NOSE, LEFT_EYE), (RIGHT_EYE, RIGHT_EAR), (LEFT_EYE, LEFT_EAR), (RIGHT_HIP, RIGHT_KNEE),
    (RIGHT_KNEE, RIGHT_ANKLE), (LEFT_HIP, LEFT_KNEE), (LEFT_KNEE, LEFT_ANKLE),
)  # fmt: skip
# The body point each hand (index 0 = left, as in the DWPose layout) and the face move with.
HAND_WRISTS = (LEFT_WRIST, RIGHT_WRIST)
FACE_ANCHOR = NOSE
# The body point each COCO-WholeBody foot point (left big toe, small toe, heel, then right) moves with, as
# UniAnimate's toe points follow the ankles.
FOOT_ANKLES = (LEFT_ANKLE,) * 3 + (RIGHT_ANKLE,) * 3
_SHORTEST_PX = 1e-6  # a driving length below this cannot be rescaled


@dataclass(frozen=True)
class LimbRetarget:
    """UniAnimate's alignment of a driving pose to a reference pose (run_align_pose.py), in pixels of one image:

    1. x is scaled by the ratio of the shoulder widths and y by that of the torso heights (shoulder centre
       to hip centre), reference over the driving pose's first frame;
    2. the body is rebuilt from the neck outwards: every limb of LIMBS keeps its direction in each frame,
       and its length is multiplied by the reference's length over the first frame's (both after step 1);
       each hand moves with its wrist and the face with the nose;
    3. everything is shifted so that the first frame's neck lands on the reference's neck.

    Ratios and shift come from the first frame and apply to every frame, so later frames keep the
    motion's own changes. UniAnimate draws no face; here the face follows the nose so that it stays on the
    head when the neck changes length. Lengths are measured in pixels, not in coordinates normalised by
    width and height, so that a limb's length does not depend on its direction in a non-square image.
    """

    scale: np.ndarray  # (2,) x and y factors of step 1
    limb_ratios: np.ndarray  # (len(LIMBS),) length factors of step 2
    offset: np.ndarray  # (2,) the shift of step 3

    def apply(
        self, body: np.ndarray, feet: np.ndarray, hands: np.ndarray, face: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pixels of body (..., 18, 2), feet (..., 6, 2), hands (..., 2, 21, 2) and face (..., 68, 2) -> the
        same, aligned."""
        scaled = body * self.scale
        rebuilt = scaled.copy()
        for (parent, child), ratio in zip(LIMBS, self.limb_ratios):
            rebuilt[..., child, :] = rebuilt[..., parent, :] + ratio * (scaled[..., child, :] - scaled[..., parent, :])
        moved = rebuilt - scaled
        hands = hands * self.scale + moved[..., HAND_WRISTS, None, :]
        face = face * self.scale + moved[..., FACE_ANCHOR, None, :]
        feet = feet * self.scale + moved[..., FOOT_ANKLES, :]
        return rebuilt + self.offset, feet + self.offset, hands + self.offset, face + self.offset


def fit_limb_retarget(
    reference: np.ndarray, reference_present: np.ndarray, driving: np.ndarray
) -> LimbRetarget:
    """The LimbRetarget of the driving pose's first frame ``driving`` (18, 2) onto ``reference`` (18, 2),
    both in pixels; ``reference_present`` (18,) marks the reference points that were found.

    The reference needs both shoulders. Without both hips (an upper-body photo) y is scaled like x. A limb
    missing from the reference keeps the driving length (ratio 1).
    """
    if not (reference_present[RIGHT_SHOULDER] and reference_present[LEFT_SHOULDER]):
        raise ValueError("the reference pose needs both shoulders to be aligned to")
    driving_width = driving[LEFT_SHOULDER, 0] - driving[RIGHT_SHOULDER, 0]
    if abs(driving_width) < _SHORTEST_PX:
        raise ValueError("the driving pose's shoulders are on one vertical line: no width to scale")
    x_ratio = (reference[LEFT_SHOULDER, 0] - reference[RIGHT_SHOULDER, 0]) / driving_width
    y_ratio = abs(x_ratio)
    hips, shoulders = [RIGHT_HIP, LEFT_HIP], [RIGHT_SHOULDER, LEFT_SHOULDER]
    driving_torso = driving[hips, 1].mean() - driving[shoulders, 1].mean()
    if reference_present[hips].all() and abs(driving_torso) >= _SHORTEST_PX:
        y_ratio = (reference[hips, 1].mean() - reference[shoulders, 1].mean()) / driving_torso
    scale = np.array([x_ratio, y_ratio])
    scaled = driving * scale
    ratios = np.ones(len(LIMBS))
    for index, (parent, child) in enumerate(LIMBS):
        driving_length = np.linalg.norm(scaled[child] - scaled[parent])
        if reference_present[parent] and reference_present[child] and driving_length >= _SHORTEST_PX:
            ratios[index] = np.linalg.norm(reference[child] - reference[parent]) / driving_length
    return LimbRetarget(scale=scale, limb_ratios=ratios, offset=reference[NECK] - scaled[NECK])
