"""Pose images against UniAnimate's drawing, with colours written down from its dwpose/util.py palette.

UniAnimate draws into a NumPy canvas with OpenCV, saves it with cv2.imwrite / cv2.imencode (which read the
array as B, G, R) and loads it with PIL (R, G, B), so the guider sees every util.py colour (r, g, b) as
(b, g, r). Limbs are dimmed to floor(0.6 x value) before the points are drawn. The expected triples below
are worked out by hand from those two rules; they are not read from iasa.pose.drawing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iasa.motion.motion_file import SmplxMotion
from iasa.pose.config import PoseConfig
from iasa.pose.drawing import draw_pose_frames, iter_pose_frames
from iasa.pose.keypoints import BODY_NAMES, FOOT_NAMES, WholeBodyKeypoints
from iasa.pose.pipeline import motion_to_keypoints
from iasa.pose.style import PoseStyleError

HEIGHT, WIDTH = 120, 100
BLACK = (0, 0, 0)


def empty_pose(frames: int = 1) -> WholeBodyKeypoints:
    """Nothing detected: every score 0."""
    return WholeBodyKeypoints(
        body=np.zeros((frames, 18, 2), np.float32), body_score=np.zeros((frames, 18), np.float32),
        hands=np.zeros((frames, 2, 21, 2), np.float32), hands_score=np.zeros((frames, 2, 21), np.float32),
        face=np.zeros((frames, 68, 2), np.float32), face_score=np.zeros((frames, 68), np.float32),
        feet=np.zeros((frames, 6, 2), np.float32), feet_score=np.zeros((frames, 6), np.float32),
        image_size=(HEIGHT, WIDTH),
    )  # fmt: skip


def place(points: np.ndarray, scores: np.ndarray, index, x_pixel: float, y_pixel: float) -> None:
    points[0, index] = (x_pixel / WIDTH, y_pixel / HEIGHT)
    scores[0, index] = 1.0


def place_body(pose: WholeBodyKeypoints, name: str, x: float, y: float) -> None:
    place(pose.body, pose.body_score, BODY_NAMES.index(name), x, y)


def place_foot(pose: WholeBodyKeypoints, name: str, x: float, y: float) -> None:
    place(pose.feet, pose.feet_score, FOOT_NAMES.index(name), x, y)


def colour(image: np.ndarray, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in image[y, x])


def test_a_limb_and_its_joints_have_the_colours_the_guider_was_trained_on() -> None:
    pose = empty_pose()
    place_body(pose, "neck", 60.5, 40.5)
    place_body(pose, "right_shoulder", 20.5, 40.5)
    image = draw_pose_frames(pose, "unianimate")[0]
    # util.py limb 0 (neck -> right shoulder) is [255, 0, 0]; dimmed (153, 0, 0); seen through BGR -> RGB.
    assert colour(image, 40, 40) == (0, 0, 153)
    # 4 pixels (stickwidth) to either side of the limb's axis, nothing beyond.
    assert colour(image, 40, 44) == (0, 0, 153) and colour(image, 40, 46) == BLACK
    # The joints on top at full colour: point 1 (neck) [255, 85, 0], point 2 (right shoulder) [255, 170, 0].
    assert colour(image, 60, 40) == (0, 85, 255)
    assert colour(image, 20, 40) == (0, 170, 255)


def test_the_feet_are_drawn_as_unianimates_ankle_to_toes_limbs_in_both_styles() -> None:
    pose = empty_pose()
    place_body(pose, "left_ankle", 70.5, 60.5)
    place_foot(pose, "left_big_toe", 65.5, 100.5)
    place_foot(pose, "left_small_toe", 75.5, 100.5)  # toes point: their midpoint (70.5, 100.5)
    place_foot(pose, "left_heel", 90.5, 80.5)  # heels are not drawn
    place_body(pose, "right_ankle", 20.5, 60.5)
    place_foot(pose, "right_big_toe", 20.5, 100.5)
    place_foot(pose, "right_small_toe", 20.5, 100.5)
    for style in ("unianimate", "face"):
        image = draw_pose_frames(pose, style)[0]
        # Limb 17 (left ankle -> left toes) [255, 0, 85]: dimmed (153, 0, 51), seen as (51, 0, 153).
        assert colour(image, 70, 80) == (51, 0, 153), style
        # Limb 18 (right ankle -> right toes) [170, 255, 255]: dimmed (102, 153, 153), seen as (153, 153, 102).
        assert colour(image, 20, 80) == (153, 153, 102), style
        # Points 18 (left toes) [170, 255, 255] and 19 (right toes) [255, 255, 0], full colour.
        assert colour(image, 70, 100) == (255, 255, 170), style
        assert colour(image, 20, 100) == (0, 255, 255), style
        assert colour(image, 90, 80) == BLACK, style
    # A foot with one toe missing has no toes point and no foot limb (UniAnimate needs both toes).
    pose.feet_score[0, FOOT_NAMES.index("left_small_toe")] = 0.0
    image = draw_pose_frames(pose, "unianimate")[0]
    assert colour(image, 70, 80) == BLACK and colour(image, 70, 100) == BLACK


def test_hands_have_rainbow_edges_and_red_points_without_dimming() -> None:
    pose = empty_pose()
    hand = 0
    place(pose.hands[:, hand], pose.hands_score[:, hand], 0, 10.5, 60.5)  # wrist
    place(pose.hands[:, hand], pose.hands_score[:, hand], 1, 50.5, 60.5)  # thumb base
    place(pose.hands[:, hand], pose.hands_score[:, hand], 5, 10.5, 20.5)  # index finger base
    place(pose.hands[:, hand], pose.hands_score[:, hand], 6, 50.5, 20.5)
    image = draw_pose_frames(pose, "unianimate")[0]
    # Edge 0 (wrist -> thumb base): hue 0 -> [255, 0, 0], seen as (0, 0, 255).
    assert colour(image, 30, 60) == (0, 0, 255)
    # Edge 5 (index finger, first segment): hue 5/20 -> [127.5 -> 128, 255, 0], seen as (0, 255, 128).
    assert colour(image, 30, 20) == (0, 255, 128)
    # Edge 4 (wrist -> index base) hue 4/20 -> [204, 255, 0], seen as (0, 255, 204).
    assert colour(image, 10, 40) == (0, 255, 204)
    # Hand points: [0, 0, 255] in util.py, seen as red.
    assert colour(image, 50, 60) == (255, 0, 0) and colour(image, 10, 20) == (255, 0, 0)


def test_face_points_are_drawn_only_in_the_face_style() -> None:
    pose = empty_pose()
    place_body(pose, "nose", 50.5, 30.5)
    place(pose.face, pose.face_score, 30, 80.5, 10.5)
    with_face, without_face = draw_pose_frames(pose, "face")[0], draw_pose_frames(pose, "unianimate")[0]
    assert colour(with_face, 80, 10) == (255, 255, 255) and colour(with_face, 83, 10) == (255, 255, 255)
    assert colour(without_face, 80, 10) == BLACK
    # Everything else is the same image: the nose, point 0 [255, 0, 0], seen as (0, 0, 255).
    assert colour(with_face, 50, 30) == colour(without_face, 50, 30) == (0, 0, 255)
    far_from_face = np.ones((HEIGHT, WIDTH), bool)
    far_from_face[5:17, 75:87] = False
    np.testing.assert_array_equal(with_face[far_from_face], without_face[far_from_face])


def test_visibility_thresholds_follow_unianimates_extraction() -> None:
    pose = empty_pose()
    place_body(pose, "nose", 50.5, 30.5)
    place(pose.hands[:, 1], pose.hands_score[:, 1], 3, 20.5, 90.5)
    pose.body_score[0, 0] = 0.3  # body: drawn above 0.3 only
    pose.hands_score[0, 1, 3] = 0.3  # hands and face: drawn at 0.3
    image = draw_pose_frames(pose, "unianimate")[0]
    assert colour(image, 50, 30) == BLACK
    assert colour(image, 20, 90) == (255, 0, 0)
    # util.py skips hand and face points on the first pixel column or row.
    place(pose.hands[:, 1], pose.hands_score[:, 1], 3, 0.5, 90.5)
    assert draw_pose_frames(pose, "unianimate")[0].max() == 0


def test_frames_one_at_a_time_equal_the_whole_video_and_styles_are_checked() -> None:
    pose = empty_pose(frames=3)
    pose.body[:] = np.linspace(0.2, 0.8, 18 * 2).reshape(18, 2)
    pose.body_score[:] = 1.0
    pose.body[1] += 0.05
    video = draw_pose_frames(pose, "face")
    assert video.shape == (3, HEIGHT, WIDTH, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(np.stack(list(iter_pose_frames(pose, "face"))), video)
    np.testing.assert_array_equal(video[0], video[2])
    assert not np.array_equal(video[0], video[1])
    with pytest.raises(PoseStyleError, match="must be one of"):
        draw_pose_frames(pose, "auto")


def test_feet_survive_motion_keypoint_file_and_drawing(tmp_path: Path) -> None:
    # A full-body framing of the built-in skeleton (which carries SMPL-X's foot points 60-65).
    config = PoseConfig(image_height=HEIGHT, image_width=WIDTH, framed_height_m=2.4, frame_center_above_pelvis_m=-0.1)
    keypoints = motion_to_keypoints(SmplxMotion.still(2), config)
    assert (keypoints.feet_score == 1).all()
    ankles = keypoints.body[0, [BODY_NAMES.index("left_ankle"), BODY_NAMES.index("right_ankle")]]
    toes = keypoints.feet[0, [FOOT_NAMES.index("left_big_toe"), FOOT_NAMES.index("right_big_toe")]]
    assert (toes[:, 1] > ankles[:, 1]).all()  # the toes below the ankles in the image
    assert toes[0, 0] > toes[1, 0]  # the person's left foot on the image's right (they face the camera)
    keypoints.save(tmp_path / "clip.npz")
    loaded = WholeBodyKeypoints.load(tmp_path / "clip.npz")
    np.testing.assert_array_equal(loaded.feet, keypoints.feet)
    image = draw_pose_frames(loaded, "unianimate")[0]
    left_toes = keypoints.feet[0, :2].mean(axis=0) * [WIDTH, HEIGHT]
    assert colour(image, int(left_toes[0]), int(left_toes[1])) == (255, 255, 170)  # point 18's colour
