"""The SMPL-X -> COCO-WholeBody -> DWPose mapping, checked by name against smplx.joint_names."""

import numpy as np
import pytest
from smplx.joint_names import JOINT_NAMES

from iasa.motion.motion_file import SmplxMotion
from iasa.pose.keypoints import BODY_NAMES, FOOT_NAMES
from iasa.pose.skeleton import NUM_OUTPUT_JOINTS, builtin_skeleton_points
from iasa.pose.wholebody import (
    COCO_BODY_FROM_SMPLX,
    COCO_FACE_FROM_SMPLX,
    COCO_FEET_FROM_SMPLX,
    COCO_LEFT_HAND_FROM_SMPLX,
    COCO_RIGHT_HAND_FROM_SMPLX,
    COCO_WHOLEBODY_FROM_SMPLX,
    OPENPOSE_FROM_COCO_BODY,
    coco_wholebody_to_dwpose,
    smplx_to_coco_wholebody,
)

COCO_BODY_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle",
]  # fmt: skip


def names(indices: list[int]) -> list[str]:
    return [JOINT_NAMES[i] for i in indices]


def test_body_points_are_the_named_joints() -> None:
    assert names(COCO_BODY_FROM_SMPLX) == COCO_BODY_NAMES


def test_foot_points_are_smplx_joints_60_to_65_in_coco_order() -> None:
    # COCO-WholeBody points 17-22: left big toe, left small toe, left heel, then the right foot's.
    assert COCO_FEET_FROM_SMPLX == [60, 61, 62, 63, 64, 65]
    assert names(COCO_FEET_FROM_SMPLX) == list(FOOT_NAMES)
    assert FOOT_NAMES == ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")


@pytest.mark.parametrize(("side", "indices"), [("left", COCO_LEFT_HAND_FROM_SMPLX), ("right", COCO_RIGHT_HAND_FROM_SMPLX)])
def test_hand_points_run_wrist_then_each_finger_base_to_tip(side: str, indices: list[int]) -> None:
    # COCO-WholeBody hand order: wrist, then thumb, index, middle, ring, pinky, each from base to tip.
    expected = [f"{side}_wrist"] + [
        name for finger in ("thumb", "index", "middle", "ring", "pinky")
        for name in [f"{side}_{finger}{k}" for k in (1, 2, 3)] + [f"{side}_{finger}"]
    ]  # fmt: skip
    assert names(indices) == expected


def test_face_points_follow_the_68_point_order() -> None:
    face = names(COCO_FACE_FROM_SMPLX)
    assert len(face) == 68
    assert face[:8] == [f"right_contour_{k}" for k in range(1, 9)] and face[8] == "contour_middle"
    assert face[9:17] == [f"left_contour_{k}" for k in range(8, 0, -1)]
    assert face[17] == "right_eye_brow1" and face[26] == "left_eye_brow1"
    assert face[30] == "nose4"  # the nose tip
    assert face[36] == "right_eye1" and face[45] == "left_eye1"  # outer eye corners
    assert face[48] == "right_mouth_1" and face[54] == "left_mouth_1"  # mouth corners


def test_openpose_body_points_carry_their_names() -> None:
    for openpose_name, coco in zip(BODY_NAMES, OPENPOSE_FROM_COCO_BODY):
        if openpose_name == "neck":
            assert coco is None
        else:
            assert JOINT_NAMES[COCO_BODY_FROM_SMPLX[coco]] == openpose_name


def test_dwpose_layout_from_known_points() -> None:
    points = np.arange(133 * 2, dtype=np.float32).reshape(133, 2)
    scores = np.ones(133, np.float32)
    scores[5] = 0.4  # left shoulder
    parts = coco_wholebody_to_dwpose(points, scores)
    body, hands, face = parts["body"], parts["hands"], parts["face"]
    assert body.shape == (18, 2) and hands.shape == (2, 21, 2) and face.shape == (68, 2)
    np.testing.assert_array_equal(body[1], (points[5] + points[6]) / 2)  # neck = shoulder midpoint
    assert parts["body_score"][1] == pytest.approx(0.4)
    np.testing.assert_array_equal(body[2], points[6])  # right shoulder
    np.testing.assert_array_equal(parts["feet"], points[17:23])
    np.testing.assert_array_equal(hands[0], points[91:112])  # index 0 = left hand
    np.testing.assert_array_equal(hands[1], points[112:133])
    np.testing.assert_array_equal(face, points[23:91])


def test_builtin_skeleton_puts_left_named_points_on_the_left() -> None:
    rest = builtin_skeleton_points(SmplxMotion.still(1))[0]
    assert rest.shape == (NUM_OUTPUT_JOINTS, 3) and len(JOINT_NAMES) >= NUM_OUTPUT_JOINTS
    for index, name in enumerate(JOINT_NAMES[:NUM_OUTPUT_JOINTS]):
        if name.startswith("left"):
            assert rest[index, 0] > 0, name  # the person's left is +x (SMPL-X faces +z, y up)
        elif name.startswith("right"):
            assert rest[index, 0] < 0, name


def test_builtin_skeleton_anatomy_is_plausible() -> None:
    rest = builtin_skeleton_points(SmplxMotion.still(1))[0]
    wholebody = smplx_to_coco_wholebody(rest)
    assert wholebody.shape == (133, 3) and (COCO_WHOLEBODY_FROM_SMPLX < NUM_OUTPUT_JOINTS).all()
    y = dict(zip(COCO_BODY_NAMES, wholebody[:17, 1]))
    assert y["left_eye"] > y["nose"] > y["left_shoulder"] > y["left_hip"] > y["left_knee"] > y["left_ankle"]
    face = wholebody[23:91]
    assert face[8, 1] < face[57, 1] < face[51, 1] < face[30, 1] < face[27, 1]  # chin, lips, nose tip, bridge
    assert (face[:, 2] > 0).all()  # the face looks forward
    feet = dict(zip(FOOT_NAMES, wholebody[17:23]))
    for side in ("left", "right"):
        big, small, heel = (feet[f"{side}_{part}"] for part in ("big_toe", "small_toe", "heel"))
        ankle = wholebody[COCO_BODY_NAMES.index(f"{side}_ankle")]
        assert max(big[1], small[1], heel[1]) < ankle[1]  # below the ankle
        assert big[2] > ankle[2] > heel[2] and small[2] > ankle[2]  # toes forward, heel back
        assert abs(big[0]) < abs(small[0])  # the big toe on the inner side
