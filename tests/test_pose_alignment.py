"""UniAnimate's limb alignment (iasa.pose.alignment.LimbRetarget) against poses worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from iasa.config import ConfigError
from iasa.motion.motion_file import SmplxMotion
from iasa.pose.alignment import fit_limb_retarget
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.pipeline import motion_to_keypoints

# A stick figure in pixels, OpenPose-18 order: arms and legs straight down, eyes and ears level with the nose.
DRIVING = np.array([
    (100, 70), (100, 100),  # nose, neck
    (80, 100), (80, 140), (80, 180),  # right shoulder, elbow, wrist (image left)
    (120, 100), (120, 140), (120, 180),  # left shoulder, elbow, wrist
    (90, 200), (90, 260), (90, 320),  # right hip, knee, ankle
    (110, 200), (110, 260), (110, 320),  # left hip, knee, ankle
    (95, 70), (105, 70), (90, 70), (110, 70),  # right eye, left eye, right ear, left ear
], np.float64)  # fmt: skip
# The reference person: shoulders 60 px apart (driving: 40, so x scales by 1.5), torso 120 px (driving: 100,
# so y scales by 1.2), limbs of their own lengths in the same directions, neck at (300, 200). The hips sit
# where the scaled torso puts them: neck + (1.5 x -10, 1.2 x 100).
REFERENCE = np.array([
    (300, 170), (300, 200),
    (270, 200), (270, 290), (270, 350),  # upper arm 90, forearm 60
    (330, 200), (330, 260), (330, 320),  # 60, 60
    (285, 320), (285, 400), (285, 470),  # thigh 80, shin 70
    (315, 320), (315, 390), (315, 480),  # 70, 90
    (292, 170), (308, 170), (286, 170), (314, 170),
], np.float64)  # fmt: skip
RIGHT_WRIST, RIGHT_ELBOW, LEFT_WRIST, NOSE, RIGHT_ANKLE, LEFT_ANKLE = 4, 3, 7, 0, 10, 13


def driving_clip() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two frames: the figure, then the figure moved by (10, 5) with the right forearm turned to point
    left. Each hand is 21 points 10 px below its wrist, except the right hand of frame 1, 10 px left of
    it; the face is 68 points 5 px below the nose; each foot's 3 points lie 10 px right of its ankle."""
    body = np.stack([DRIVING, DRIVING + (10, 5)])
    body[1, RIGHT_WRIST] = body[1, RIGHT_ELBOW] + (-40, 0)
    hands = np.repeat(body[:, [LEFT_WRIST, RIGHT_WRIST], None, :], 21, axis=2) + (0, 10)
    hands[1, 1] += (-10, -10)
    face = np.repeat(body[:, None, NOSE], 68, axis=1) + (0, 5)
    feet = np.repeat(body[:, [LEFT_ANKLE, RIGHT_ANKLE]], 3, axis=1) + (10, 0)
    return body, feet, hands, face


def test_first_frame_takes_the_reference_limbs_and_place() -> None:
    body, feet, hands, face = driving_clip()
    retarget = fit_limb_retarget(REFERENCE, np.ones(18, bool), body[0])
    np.testing.assert_allclose(retarget.scale, [1.5, 1.2])
    aligned_body, aligned_feet, aligned_hands, aligned_face = retarget.apply(body, feet, hands, face)
    np.testing.assert_allclose(aligned_body[0], REFERENCE, atol=1e-9)
    # Hands follow their wrists and the face the nose, their offsets scaled by (1.5, 1.2).
    np.testing.assert_allclose(aligned_hands[0, 0], np.repeat([REFERENCE[LEFT_WRIST] + (0, 12)], 21, 0))
    np.testing.assert_allclose(aligned_hands[0, 1], np.repeat([REFERENCE[RIGHT_WRIST] + (0, 12)], 21, 0))
    np.testing.assert_allclose(aligned_face[0], np.repeat([REFERENCE[NOSE] + (0, 6)], 68, 0))
    # Feet follow their ankles (left foot = COCO-WholeBody's first three foot points).
    np.testing.assert_allclose(aligned_feet[0, :3], np.repeat([REFERENCE[LEFT_ANKLE] + (15, 0)], 3, 0))
    np.testing.assert_allclose(aligned_feet[0, 3:], np.repeat([REFERENCE[RIGHT_ANKLE] + (15, 0)], 3, 0))


def test_later_frames_keep_the_motion_with_the_first_frame_ratios() -> None:
    body, feet, hands, face = driving_clip()
    retarget = fit_limb_retarget(REFERENCE, np.ones(18, bool), body[0])
    aligned_body, _, aligned_hands, aligned_face = retarget.apply(body, feet, hands, face)
    # The move (10, 5) becomes (15, 6). The turned forearm, (-40, 0) -> scaled (-60, 0), keeps the forearm
    # ratio of frame 0 (60 px over 1.2 x 40 = 48 px: 1.25): (-75, 0) from the elbow.
    expected = REFERENCE + (15, 6)
    expected[RIGHT_WRIST] = expected[RIGHT_ELBOW] + (-75, 0)
    np.testing.assert_allclose(aligned_body[1], expected, atol=1e-9)
    np.testing.assert_allclose(aligned_hands[1, 0], np.repeat([expected[LEFT_WRIST] + (0, 12)], 21, 0))
    np.testing.assert_allclose(aligned_hands[1, 1], np.repeat([expected[RIGHT_WRIST] + (-15, 0)], 21, 0))
    np.testing.assert_allclose(aligned_face[1], np.repeat([expected[NOSE] + (0, 6)], 68, 0))


def test_upper_body_reference_scales_both_axes_by_the_shoulders() -> None:
    reference = 1.5 * DRIVING + (150, 50)
    present = np.ones(18, bool)
    present[8:14] = False  # no hips or legs in the photo
    reference[8:14] = 0.0  # whatever a detector left there is not read
    retarget = fit_limb_retarget(reference, present, DRIVING)
    np.testing.assert_allclose(retarget.scale, [1.5, 1.5])
    aligned = retarget.apply(DRIVING[None], np.zeros((1, 6, 2)), np.zeros((1, 2, 21, 2)), np.zeros((1, 68, 2)))[0][0]
    # Upper body on the reference; legs at their scaled driving lengths below the reference's neck.
    np.testing.assert_allclose(aligned, 1.5 * DRIVING + (150, 50), atol=1e-9)


def test_no_shoulders_in_the_reference_is_refused() -> None:
    present = np.ones(18, bool)
    present[2] = False
    with pytest.raises(ValueError, match="both shoulders"):
        fit_limb_retarget(REFERENCE, present, DRIVING)


def test_motion_is_laid_onto_a_scaled_and_moved_copy_of_itself() -> None:
    motion = SmplxMotion.still(2)
    config = PoseConfig(image_height=400, image_width=400)
    default = motion_to_keypoints(motion, config)
    size = (500, 450)

    def moved(points: np.ndarray) -> np.ndarray:  # 400 x 400 pixels -> x 0.7 + (40, 90) -> normalised in 450 x 500
        return ((points * 400 * 0.7 + (40, 90)) / (450, 500)).astype(np.float32)

    first = default.slice_frames(0, 1)
    reference = WholeBodyKeypoints(
        body=moved(first.body), body_score=first.body_score, hands=moved(first.hands), hands_score=first.hands_score,
        face=moved(first.face), face_score=first.face_score, image_size=size,
    )  # fmt: skip
    aligned = motion_to_keypoints(motion, config, reference=reference)
    assert aligned.image_size == size
    visible = (aligned.body_score[0] > 0) & (default.body_score[0] > 0)
    assert visible.sum() >= 8
    np.testing.assert_allclose(aligned.body[0][visible], reference.body[0][visible], atol=1e-4)
    np.testing.assert_allclose(aligned.face[1], reference.face[0], atol=1e-4)


def test_unknown_alignment_is_a_config_error() -> None:
    motion = SmplxMotion.still(1)
    reference = motion_to_keypoints(motion)
    with pytest.raises(ConfigError, match="pose.alignment must be one of"):
        motion_to_keypoints(motion, PoseConfig(alignment="affine"), reference=reference)
