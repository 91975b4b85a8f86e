"""A built-in SMPL-X-like skeleton, so motion can be turned into 2D keypoints without the SMPL-X model files.

What it is: the 55 SMPL-X joints with the SMPL-X kinematic tree and hand-set rest positions of an average
adult in the SMPL-X rest pose (T-pose, metres, Y up, facing +Z, the person's left on +X, pelvis at the
origin), posed by forward kinematics of the axis-angle rotations. On top of the joints it carries the 89
extra points that ``smplx`` appends with ``use_face_contour=True`` (nose, eyes, ears, feet, fingertips, 51
face landmarks, 17 face-contour points), each rigidly attached to one joint at an approximate offset, so
its output has the same (T, 144, 3) joint layout as the SMPL-X model and one keypoint mapping serves both.

What it is not: a body model. There are no shape blend shapes (betas are ignored), no pose correctives,
and the face landmarks only follow the head and the jaw rotation, plus one documented expression
direction: coefficient ``BLINK_EXPRESSION_INDEX`` closes the eyelids (1 = closed), which the procedural
motion generator uses for blinks.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange
from scipy.spatial.transform import Rotation

from iasa.motion.motion_file import NUM_JOINTS, SmplxMotion

NUM_OUTPUT_JOINTS = 144  # smplx with use_face_contour=True: 55 joints + 21 extra + 51 landmarks + 17 contour

# Parent of each of the 55 SMPL-X joints (the kinematic tree of SMPL-X's kintree_table).
SMPLX_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15]
    + [20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38]
    + [21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]
)  # fmt: skip

HEAD, JAW = 15, 22
# The expression coefficient that the built-in face reads as "eyelids closed" (0 open, 1 closed).
BLINK_EXPRESSION_INDEX = 0
EYELID_TRAVEL_M = 0.009  # how far an upper eyelid point moves down when the eye closes

# Rest positions of the 22 body joints, the jaw and the eyeballs (metres). The left side; the right side
# is the mirror image (x -> -x).
_REST_BODY = {
    0: (0.0, 0.0, 0.0),  # pelvis
    1: (0.06, -0.09, 0.0), 4: (0.11, -0.48, 0.0), 7: (0.08, -0.88, -0.04), 10: (0.12, -0.94, 0.08),  # leg
    3: (0.0, 0.11, -0.01), 6: (0.0, 0.24, 0.0), 9: (0.0, 0.30, 0.01), 12: (0.0, 0.51, -0.02),  # spine, neck
    13: (0.08, 0.42, -0.01), 16: (0.18, 0.45, -0.02), 18: (0.44, 0.43, -0.04), 20: (0.69, 0.43, -0.04),  # arm
    15: (0.0, 0.60, 0.0), 22: (0.0, 0.62, 0.02), 23: (0.032, 0.67, 0.06),  # head, jaw, left eyeball
}  # fmt: skip
_MIRROR_OF = {1: 2, 4: 5, 7: 8, 10: 11, 13: 14, 16: 17, 18: 19, 20: 21, 23: 24}

# Left-hand joints relative to the left wrist (palm down, fingers along +X, thumb forward along +Z),
# in the SMPL-X order index, middle, pinky, ring, thumb with three joints each.
_LEFT_FINGER_BASES = {
    "index": ((0.085, 0.005, 0.025), (0.030, 0.0, 0.0)),
    "middle": ((0.088, 0.005, 0.0), (0.032, 0.0, 0.0)),
    "pinky": ((0.075, -0.005, -0.036), (0.021, 0.0, -0.003)),
    "ring": ((0.084, 0.0, -0.019), (0.029, 0.0, -0.002)),
    "thumb": ((0.025, -0.015, 0.025), (0.022, -0.004, 0.016)),
}  # finger -> (first joint offset from the wrist, step between successive joints and to the tip)
_FINGER_ORDER = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X joint order
_TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")  # smplx extra fingertip order

# The 68 face points (iBUG order: contour 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) relative
# to the head joint, for a face about 15 cm wide. Point 0 is on the person's right (-x).
_CONTOUR_ANGLES = np.linspace(0.0, np.pi, 17)
_FACE_68 = np.array(
    [(-0.072 * np.cos(a), 0.06 - 0.115 * np.sin(a), 0.02 + 0.07 * np.sin(a)) for a in _CONTOUR_ANGLES]
    + [(-0.058, 0.086, 0.085), (-0.047, 0.092, 0.092), (-0.035, 0.094, 0.096), (-0.023, 0.092, 0.099),
       (-0.012, 0.089, 0.1)]
    + [(0.012, 0.089, 0.1), (0.023, 0.092, 0.099), (0.035, 0.094, 0.096), (0.047, 0.092, 0.092),
       (0.058, 0.086, 0.085)]
    + [(0.0, 0.075, 0.1), (0.0, 0.062, 0.106), (0.0, 0.049, 0.112), (0.0, 0.036, 0.118)]
    + [(-0.016, 0.026, 0.1), (-0.008, 0.023, 0.106), (0.0, 0.021, 0.109), (0.008, 0.023, 0.106),
       (0.016, 0.026, 0.1)]
    + [(-0.047, 0.07, 0.085), (-0.037, 0.075, 0.091), (-0.027, 0.075, 0.093), (-0.017, 0.07, 0.094),
       (-0.027, 0.066, 0.093), (-0.037, 0.066, 0.091)]
    + [(0.017, 0.07, 0.094), (0.027, 0.075, 0.093), (0.037, 0.075, 0.091), (0.047, 0.07, 0.085),
       (0.037, 0.066, 0.091), (0.027, 0.066, 0.093)]
    + [(-0.025, -0.01, 0.095), (-0.016, -0.002, 0.103), (-0.006, 0.001, 0.107), (0.0, 0.0, 0.108),
       (0.006, 0.001, 0.107), (0.016, -0.002, 0.103), (0.025, -0.01, 0.095), (0.016, -0.02, 0.102),
       (0.006, -0.024, 0.106), (0.0, -0.025, 0.107), (-0.006, -0.024, 0.106), (-0.016, -0.02, 0.102)]
    + [(-0.02, -0.01, 0.097), (-0.008, -0.006, 0.104), (0.0, -0.006, 0.105), (0.008, -0.006, 0.104),
       (0.02, -0.01, 0.097), (0.008, -0.013, 0.104), (0.0, -0.013, 0.105), (-0.008, -0.013, 0.104)]
)  # fmt: skip
# Face points that move with the jaw: the lower contour, the lower lips and the lower inner lip.
_JAW_FACE_POINTS = [*range(4, 13), 55, 56, 57, 58, 59, 65, 66, 67]
_UPPER_EYELID_POINTS = [37, 38, 43, 44]


def _mirror(point: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-point[0], point[1], point[2])


def _build_rest_joints() -> np.ndarray:
    """(55, 3) rest positions of the SMPL-X joints."""
    rest = np.zeros((NUM_JOINTS, 3))
    for joint, position in _REST_BODY.items():
        rest[joint] = position
        if joint in _MIRROR_OF:
            rest[_MIRROR_OF[joint]] = _mirror(position)
    for side, wrist, first in (("left", 20, 25), ("right", 21, 40)):
        for finger_number, finger in enumerate(_FINGER_ORDER):
            base, step = _LEFT_FINGER_BASES[finger]
            for knuckle in range(3):
                offset = np.add(base, np.multiply(step, knuckle))
                rest[first + 3 * finger_number + knuckle] = rest[wrist] + (
                    offset if side == "left" else _mirror(tuple(offset))
                )
    return rest


def _build_extra_points(rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(89,) parent joint and (89, 3) rest position of every point after the 55 joints."""
    head = rest[HEAD]
    parents: list[int] = []
    points: list[np.ndarray] = []

    def add(parent: int, position: np.ndarray) -> None:
        parents.append(parent)
        points.append(np.asarray(position, dtype=np.float64))

    add(HEAD, head + (0.0, 0.035, 0.118))  # nose (55)
    add(HEAD, head + (-0.032, 0.07, 0.09))  # right eye (56)
    add(HEAD, head + (0.032, 0.07, 0.09))  # left eye (57)
    add(HEAD, head + (-0.075, 0.055, 0.0))  # right ear (58)
    add(HEAD, head + (0.075, 0.055, 0.0))  # left ear (59)
    for foot, ankle in ((10, 7), (11, 8)):  # big toe, small toe, heel (60-65)
        side = 1.0 if foot == 10 else -1.0
        add(foot, rest[foot] + (side * 0.01, -0.03, 0.12))
        add(foot, rest[foot] + (side * 0.06, -0.03, 0.09))
        add(ankle, rest[ankle] + (0.0, -0.07, -0.06))
    for first in (25, 40):  # fingertips (66-75): one step past each finger's last joint
        for finger in _TIP_ORDER:
            last = first + 3 * _FINGER_ORDER.index(finger) + 2
            add(last, 2 * rest[last] - rest[last - 1])
    face = head + _FACE_68
    for index in [*range(17, 68), *range(0, 17)]:  # landmarks 17-67 (76-126), then the contour (127-143)
        add(JAW if index in _JAW_FACE_POINTS else HEAD, face[index])
    return np.array(parents), np.stack(points)


REST_JOINTS = _build_rest_joints()
EXTRA_PARENTS, EXTRA_REST = _build_extra_points(REST_JOINTS)
# Rows of EXTRA_REST (after 21 nose/eye/ear/feet/fingertip points) of the upper eyelid points a blink moves.
_UPPER_EYELID_ROWS = [21 + (index - 17) for index in _UPPER_EYELID_POINTS]


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    flat = axis_angle.reshape(-1, 3)
    return Rotation.from_rotvec(flat).as_matrix().reshape(*axis_angle.shape[:-1], 3, 3)


def builtin_skeleton_points(motion: SmplxMotion) -> np.ndarray:
    """(T, 144, 3) points in the smplx joint layout (use_face_contour=True), in metres, for ``motion``.

    Forward kinematics: each joint's world rotation is its parent's times its own; its position is the
    parent's plus the parent's world rotation applied to the rest bone. The root moves by ``trans``.
    """
    local = axis_angle_to_matrix(rearrange(motion.poses.astype(np.float64), "t (j c) -> t j c", c=3))
    frames = local.shape[0]
    world_rotation = np.empty_like(local)
    world_position = np.empty((frames, NUM_JOINTS, 3))
    world_rotation[:, 0] = local[:, 0]
    world_position[:, 0] = REST_JOINTS[0] + motion.trans
    for joint in range(1, NUM_JOINTS):
        parent = SMPLX_PARENTS[joint]
        world_rotation[:, joint] = world_rotation[:, parent] @ local[:, joint]
        bone = REST_JOINTS[joint] - REST_JOINTS[parent]
        world_position[:, joint] = world_position[:, parent] + world_rotation[:, parent] @ bone

    offsets = np.broadcast_to(EXTRA_REST - REST_JOINTS[EXTRA_PARENTS], (frames, *EXTRA_REST.shape)).copy()
    blink = np.clip(motion.expressions[:, BLINK_EXPRESSION_INDEX], 0.0, 1.0)
    offsets[:, _UPPER_EYELID_ROWS, 1] -= EYELID_TRAVEL_M * blink[:, None]
    extra = world_position[:, EXTRA_PARENTS] + np.einsum(
        "tpij,tpj->tpi", world_rotation[:, EXTRA_PARENTS], offsets
    )
    return np.concatenate([world_position, extra], axis=1).astype(np.float32)
