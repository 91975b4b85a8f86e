import numpy as np

from iasa.pose.drawing import BODY_COLORS, FACE_POINT_COLOR, HAND_POINT_COLOR, LIMB_DIMMING, draw_pose_frames
from iasa.pose.keypoints import WholeBodyKeypoints


def keypoints_at(frames: int = 2, size: tuple[int, int] = (120, 100)) -> WholeBodyKeypoints:
    """Body points on a grid, the hands and face as small clusters, all confident."""
    rng = np.random.default_rng(0)
    body = np.stack(np.meshgrid(np.linspace(0.1, 0.9, 6), np.linspace(0.1, 0.5, 3)), -1).reshape(18, 2)
    return WholeBodyKeypoints(
        body=np.repeat(body[None], frames, 0).astype(np.float32), body_score=np.ones((frames, 18), np.float32),
        hands=np.repeat(0.7 + 0.05 * rng.random((1, 2, 21, 2)), frames, 0).astype(np.float32),
        hands_score=np.ones((frames, 2, 21), np.float32),
        face=np.tile(np.array([[0.2, 0.85]], np.float32), (frames, 68, 1)), face_score=np.ones((frames, 68), np.float32),
        image_size=size,
    )  # fmt: skip


def pixel(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return image[int(point[1] * height), int(point[0] * width)]


def test_frames_have_the_video_shape_and_a_black_background() -> None:
    keypoints = keypoints_at()
    frames = draw_pose_frames(keypoints)
    assert frames.shape == (2, 120, 100, 3) and frames.dtype == np.uint8
    assert (frames[:, 115:, 40:60] == 0).all()  # nothing drawn there
    np.testing.assert_array_equal(frames[0], frames[1])


def test_points_have_their_part_colours() -> None:
    keypoints = keypoints_at()
    image = draw_pose_frames(keypoints)[0]
    assert tuple(pixel(image, keypoints.face[0, 0])) == FACE_POINT_COLOR  # face drawn last, on top
    hand_pixel = pixel(image, keypoints.hands[0, 0, 5])
    assert tuple(hand_pixel) == HAND_POINT_COLOR
    # Body joints sit on dimmed limbs but are drawn at full colour.
    nose = keypoints.body[0, 0]
    assert tuple(pixel(image, nose)) == BODY_COLORS[0]


def test_unconfident_points_and_their_limbs_are_not_drawn() -> None:
    keypoints = keypoints_at(frames=1)
    keypoints.face_score[:] = 0
    keypoints.hands_score[:] = 0
    keypoints.body_score[:] = 0
    keypoints.body_score[0, [2, 3]] = 1.0  # right shoulder and right elbow only
    image = draw_pose_frames(keypoints)[0]
    colours = {tuple(c) for c in image.reshape(-1, 3)} - {(0, 0, 0)}
    limb_colour = tuple(int(c * LIMB_DIMMING) for c in BODY_COLORS[2])  # the shoulder-elbow limb, dimmed
    assert colours <= {BODY_COLORS[2], BODY_COLORS[3], limb_colour}
    assert limb_colour in colours
