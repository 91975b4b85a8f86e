"""The keypoint framing (turn to the camera, camera, alignment to the reference): fitted once, applied per frame,
so a stream can fit it on its first frame and convert its motion piece by piece."""

from __future__ import annotations

import numpy as np
import pytest

from iasa.motion.motion_file import SmplxMotion
from iasa.motion.procedural import ProceduralMotionGenerator
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.pipeline import fit_keypoint_framing, motion_to_keypoints
from iasa.pose.synthetic_speaker import synthetic_speech

POSE = PoseConfig(image_height=80, image_width=64)
ARRAYS = ("body", "body_score", "hands", "hands_score", "face", "face_score", "feet", "feet_score")


def concatenated(pieces: list[WholeBodyKeypoints]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([getattr(piece, name) for piece in pieces]) for name in ARRAYS}


def turned(motion: SmplxMotion, yaw: float) -> SmplxMotion:
    """The motion with its root turned by `yaw` about the vertical (the root's rotation is about Y alone here)."""
    poses = motion.poses.copy()
    poses[:, 1] += yaw
    return SmplxMotion(poses, motion.expressions, motion.trans, motion.betas, motion.fps)


@pytest.fixture(scope="module")
def motion() -> SmplxMotion:
    return ProceduralMotionGenerator()(synthetic_speech(1.5, seed=3))


@pytest.fixture(scope="module")
def reference(motion) -> WholeBodyKeypoints:
    return motion_to_keypoints(turned(motion, 0.0), PoseConfig(image_height=96, image_width=72)).slice_frames(10, 11)


@pytest.mark.parametrize("alignment", [None, "unianimate", "similarity"])
def test_keypoints_made_piece_by_piece_with_the_first_frame_framing_equal_the_whole(motion, reference, alignment):
    config = POSE if alignment is None else PoseConfig(image_height=96, image_width=72, alignment=alignment)
    target = None if alignment is None else reference
    framing = fit_keypoint_framing(motion.slice_frames(0, 1), config, reference=target)
    whole = motion_to_keypoints(motion, config, reference=target, framing=framing)
    pieces = [
        motion_to_keypoints(motion.slice_frames(start, start + 7), config, reference=target, framing=framing)
        for start in range(0, motion.num_frames, 7)
    ]
    for name, value in concatenated(pieces).items():
        np.testing.assert_allclose(value, getattr(whole, name), atol=1e-6, rtol=0, err_msg=name)
    # framing=None fits it on the whole clip (its mean facing and pelvis): here a different picture
    clip = motion_to_keypoints(motion, config, reference=target)
    assert np.abs(clip.body - whole.body).max() > 1e-4
    refit = motion_to_keypoints(motion, config, reference=target, framing=fit_keypoint_framing(motion, config, reference=target))
    np.testing.assert_array_equal(refit.body, clip.body)


def test_a_first_frame_framing_turns_a_turned_speaker_back_to_the_camera(motion):
    """A speaker turned by 0.5 rad, framed by its first frame, is seen as the unturned speaker is (by its own
    first frame): the turn is about the vertical through the first frame's pelvis."""
    straight = motion.slice_frames(0, 1)
    away = turned(straight, 0.5)
    seen = motion_to_keypoints(away, POSE, framing=fit_keypoint_framing(away, POSE))
    expected = motion_to_keypoints(straight, POSE, framing=fit_keypoint_framing(straight, POSE))
    np.testing.assert_allclose(seen.body, expected.body, atol=1e-5)
    unturned = motion_to_keypoints(away, PoseConfig(image_height=80, image_width=64, face_camera=False))
    assert np.abs(unturned.body - expected.body).max() > 0.01  # without the turn it looks different
