"""Pinhole projection, default framing, similarity alignment and the motion -> keypoints path
(UniAnimate's limb alignment: tests/test_pose_alignment.py)."""

import warnings

import numpy as np
import pytest

from iasa.motion.motion_file import SmplxMotion
from iasa.pose.alignment import fit_similarity
from iasa.pose.camera import PinholeCamera, framing_camera
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import BODY_NAMES, WholeBodyKeypoints
from iasa.pose.pipeline import motion_to_keypoints


def rotation_2d(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_projection_of_known_points() -> None:
    camera = PinholeCamera(focal_px=100.0, cx=50.0, cy=40.0, position=(0.0, 0.0, 10.0))
    pixels, in_front = camera.project(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 5.0], [-2.0, -1.0, 8.0], [0.0, 0.0, 11.0]]))
    np.testing.assert_allclose(pixels[:3], [[60.0, 20.0], [50.0, 40.0], [50 - 100.0, 40 + 50.0]])
    assert in_front.tolist() == [True, True, True, False]  # the last point is behind the camera


def test_default_framing_centres_the_upper_body() -> None:
    config = PoseConfig()
    pelvis = np.array([0.1, -0.3, 0.05])
    camera = framing_camera(config, pelvis, (config.image_height, config.image_width))
    centre = pelvis + (0.0, config.frame_center_above_pelvis_m, 0.0)
    half = config.framed_height_m / 2
    pixels, _ = camera.project(np.stack([centre, centre + (0, half, 0), centre - (0, half, 0)]))
    np.testing.assert_allclose(pixels[0], [config.image_width / 2, config.image_height / 2])
    np.testing.assert_allclose(pixels[1:, 1], [0.0, config.image_height])  # framed height fills the image


def test_rest_pose_keypoints_show_head_shoulders_and_hands_in_frame() -> None:
    keypoints = motion_to_keypoints(SmplxMotion.still(2))
    score = dict(zip(BODY_NAMES, keypoints.body_score[0]))
    for name in ("nose", "neck", "left_shoulder", "right_shoulder", "left_eye", "right_ear", "left_hip"):
        assert score[name] == 1.0, name
    assert score["left_ankle"] == 0.0  # an upper-body shot: feet out of frame
    assert keypoints.face_score.min() == 1.0
    body = dict(zip(BODY_NAMES, keypoints.body[0]))
    assert body["right_shoulder"][0] < 0.5 < body["left_shoulder"][0]  # the person's left on image right
    assert body["nose"][1] < body["neck"][1] < body["left_hip"][1]  # v grows downwards
    assert 0.0 <= keypoints.body.min() and keypoints.body.max() <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_similarity_recovers_a_known_transform(seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(12, 2))
    scale, angle, shift = rng.uniform(0.3, 3.0), rng.uniform(-np.pi, np.pi), rng.normal(size=2) * 5
    target = scale * source @ rotation_2d(angle).T + shift
    fitted = fit_similarity(source, target)
    assert fitted.scale == pytest.approx(scale)
    np.testing.assert_allclose(fitted.rotation, rotation_2d(angle), atol=1e-9)
    np.testing.assert_allclose(fitted.translation, shift, atol=1e-9)
    np.testing.assert_allclose(fitted.apply(source), target, atol=1e-9)


def test_fit_similarity_never_reflects_and_needs_two_points() -> None:
    source = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    fitted = fit_similarity(source, source * [-1.0, 1.0])  # a mirror image: best rotation, not a reflection
    assert np.linalg.det(fitted.rotation) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two distinct points"):
        fit_similarity(np.zeros((3, 2)), np.ones((3, 2)))


def transformed(keypoints: WholeBodyKeypoints, scale: float, angle: float, shift: np.ndarray, size: tuple[int, int]) -> WholeBodyKeypoints:
    """Keypoints moved by a pixel-space similarity and re-normalised to an image of ``size``."""
    source_scale = np.array(keypoints.image_size[::-1], dtype=np.float64)
    target_scale = np.array(size[::-1], dtype=np.float64)

    def move(points: np.ndarray) -> np.ndarray:
        return ((scale * (points * source_scale) @ rotation_2d(angle).T + shift) / target_scale).astype(np.float32)

    return WholeBodyKeypoints(
        body=move(keypoints.body), body_score=keypoints.body_score, hands=move(keypoints.hands),
        hands_score=keypoints.hands_score, face=move(keypoints.face), face_score=keypoints.face_score,
        image_size=size,
    )  # fmt: skip


def test_similarity_alignment_lays_the_skeleton_onto_a_moved_reference() -> None:
    motion = SmplxMotion.still(3)
    config = PoseConfig(image_height=400, image_width=400, alignment="similarity")
    default = motion_to_keypoints(motion, config)
    reference = transformed(default.slice_frames(0, 1), 0.8, 0.1, np.array([60.0, 30.0]), size=(500, 450))
    aligned = motion_to_keypoints(motion, config, reference=reference)
    assert aligned.image_size == (500, 450)
    visible = (aligned.body_score[0] > 0) & (default.body_score[0] > 0)  # unclipped on both sides
    assert visible.sum() >= 8
    np.testing.assert_allclose(aligned.body[0][visible], reference.body[0][visible], atol=1e-4)
    np.testing.assert_allclose(aligned.face[2], reference.face[0], atol=1e-4)  # the same motion in every frame


@pytest.mark.parametrize(
    "alignment, message",
    [("similarity", "share only 0 confident body points"), ("unianimate", "lack a confident shoulder")],
)
def test_alignment_without_shared_points_keeps_the_default_framing(alignment: str, message: str) -> None:
    motion = SmplxMotion.still(1)
    default = motion_to_keypoints(motion)
    reference = WholeBodyKeypoints(
        body=default.body, body_score=np.zeros_like(default.body_score), hands=default.hands,
        hands_score=default.hands_score, face=default.face, face_score=default.face_score,
        image_size=default.image_size,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aligned = motion_to_keypoints(motion, PoseConfig(alignment=alignment), reference=reference)
    assert any(message in str(w.message) for w in caught)
    np.testing.assert_allclose(aligned.body, default.body)


def test_face_camera_turns_a_person_facing_sideways() -> None:
    motion = SmplxMotion.still(2)
    front = motion_to_keypoints(motion)
    motion.poses[:, 1] = np.pi / 2  # root turned 90 degrees about the vertical axis
    turned_back = motion_to_keypoints(motion)
    np.testing.assert_allclose(turned_back.body, front.body, atol=1e-5)
    sideways = motion_to_keypoints(motion, PoseConfig(face_camera=False))
    shoulder_width = abs(sideways.body[0, 2, 0] - sideways.body[0, 5, 0])
    assert shoulder_width < 0.05  # seen from the side, the shoulders overlap
