"""A 2D cartoon person drawn from whole-body keypoints: the ground-truth video of any motion.

``render_avatar(keypoints, identity)`` is a deterministic function of the DWPose keypoints and the
identity's appearance, and everything that moves is read off the keypoints, so a video model that
sees only pose images (and a reference frame) can in principle reproduce it exactly:
- the head follows the face contour (position, size, roll; the jaw contour opens with the mouth), the
  skull, ears and hair are rigid in the frame of the temples (contour points 0 and 16);
- each eye is the almond between its eyelid landmarks, scaled about its centre by the identity's eye
  size, so it closes when the lid points meet; the iris is clipped by the lids;
- the mouth is the outer lip contour, its opening the inner lip contour (dark interior, teeth, tongue);
- eyebrows follow the brow points, the nose the nostril points;
- torso and arms are filled shapes on the body points (neck, shoulders, elbows, wrists, hips), the hands
  a palm and five fingers on the 21 hand points.
A part is drawn only when all its points are visible (score >= MIN_VISIBLE_SCORE). Sizes are fractions
of the face width (temple to temple) and the shoulder width, so the look does not depend on the framing.

Drawing: OpenCV with anti-aliasing and sub-pixel coordinates (SUBPIXEL_BITS), so slow motion moves
edges smoothly instead of in whole-pixel steps. Back to front: hair behind the head, neck, torso, head
(ears, face, nose, mouth, eyes, brows, hair), arms, hands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.synthetic.identity import Identity

RGB = tuple[int, int, int]

MIN_VISIBLE_SCORE = 0.3  # as DWPose's drawing threshold
SUBPIXEL_BITS = 4
CURVE_SAMPLES = 4  # points per segment of a smoothed (Catmull-Rom) outline
MIN_OPEN_AREA_PX = 0.5  # an eye or mouth opening smaller than this many pixels is drawn closed

# Body points (iasa.pose.keypoints.BODY_NAMES) and face landmarks (iBUG 68) the renderer reads.
NECK, RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST = 1, 2, 3, 4
LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, RIGHT_HIP, LEFT_HIP = 5, 6, 7, 8, 11
ARMS = ((RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST), (LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST))
CONTOUR = slice(0, 17)
RIGHT_TEMPLE, CHIN, LEFT_TEMPLE = 0, 8, 16
BROWS = (slice(17, 22), slice(22, 27))
NOSE_BRIDGE, NOSTRILS = slice(27, 31), slice(31, 36)
# Each eye: outer/inner corners and the upper lid between them, then the lower lid back.
EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
OUTER_LIPS, INNER_LIPS = slice(48, 60), slice(60, 68)
INNER_UPPER_LIP = (60, 61, 62, 63, 64)
MOUTH_CORNERS = (48, 54)
# Hand points: wrist 0, then four per finger from the base: thumb 1-4, index 5-8, ..., pinky 17-20.
PALM_POINTS = (0, 1, 5, 9, 13, 17)
FINGERS_BACK_TO_FRONT = ((17, 18, 19, 20), (13, 14, 15, 16), (9, 10, 11, 12), (5, 6, 7, 8), (1, 2, 3, 4))
HAND_OF_WRIST = {LEFT_WRIST: 0, RIGHT_WRIST: 1}  # DWPose hand 0 is the person's left

# Proportions in half face widths (head) and shoulder widths (body).
EAR_CENTRE, EAR_AXES = (1.0, 0.32), (0.2, 0.36)
NECK_HALF_WIDTH = 0.62
TORSO_LENGTH = 1.6  # neck to hips when the hips are not visible
COLLAR_RISE = 0.12  # the neckline sits this far above the neck point (the shoulders slope up to the neck)
COLLAR_HALF_WIDTH = 0.2
NECKLINE_DIPS = {"round": 0.16, "v": 0.34, "collar": 0.12}  # how far the neckline falls below the collar
WAIST_HALF_WIDTH = 0.36
UPPER_ARM_RADIUS, FOREARM_RADIUS = 0.1, 0.08
SHORT_SLEEVE_LENGTH = 0.55  # of the upper arm
FINGER_RADIUS, THUMB_RADIUS = 0.09, 0.11  # of the palm length (wrist to the middle finger's base)
PALM_PADDING = 0.2  # of the palm length
OUTLINE_WIDTH = 0.012  # of the shoulder width
IRIS_RADIUS = 0.25  # of the drawn eye width
EYE_ROUNDNESS = 1.5  # the drawn eye opening is this much taller than the landmarks' (relative to its width)
TEETH_HEIGHT = 0.15  # of the drawn mouth width

SCLERA, PUPIL, MOUTH_INSIDE, TEETH, TONGUE = (246, 246, 240), (15, 12, 12), (75, 22, 30), (250, 250, 245), (205, 95, 105)
LASH = (35, 25, 25)


@dataclass(frozen=True)
class HeadFrame:
    """Image coordinates of the head: origin between the temples, x towards the person's left temple,
    y perpendicular (down the face), unit = half the temple distance."""

    origin: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    scale: float

    @classmethod
    def from_face(cls, face: np.ndarray) -> "HeadFrame | None":
        across = face[LEFT_TEMPLE] - face[RIGHT_TEMPLE]
        half_width = float(np.hypot(*across)) / 2
        if half_width < 1.0:
            return None
        x_axis = across / (2 * half_width)
        return cls((face[LEFT_TEMPLE] + face[RIGHT_TEMPLE]) / 2, x_axis, np.array([-x_axis[1], x_axis[0]]), half_width)

    def to_image(self, local: np.ndarray) -> np.ndarray:
        """(..., 2) head coordinates -> image pixels."""
        local = np.asarray(local, dtype=np.float64)
        return self.origin + self.scale * (local[..., :1] * self.x_axis + local[..., 1:] * self.y_axis)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        relative = (np.asarray(points, dtype=np.float64) - self.origin) / self.scale
        return np.stack([relative @ self.x_axis, relative @ self.y_axis], axis=-1)

    @property
    def angle_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.x_axis[1], self.x_axis[0])))


def render_avatar(keypoints: WholeBodyKeypoints, identity: Identity) -> np.ndarray:
    """The cartoon video (F, H, W, 3) uint8 RGB of ``identity`` moving as ``keypoints``."""
    height, width = keypoints.image_size
    background = render_background(identity, (height, width))
    scale = np.array([width, height], dtype=np.float64)
    frames = np.empty((keypoints.num_frames, height, width, 3), dtype=np.uint8)
    for index in range(keypoints.num_frames):
        frames[index] = background
        draw_person(
            frames[index], identity,
            body=keypoints.body[index] * scale, body_visible=keypoints.body_score[index] >= MIN_VISIBLE_SCORE,
            hands=keypoints.hands[index] * scale, hands_visible=keypoints.hands_score[index] >= MIN_VISIBLE_SCORE,
            face=keypoints.face[index] * scale, face_visible=keypoints.face_score[index] >= MIN_VISIBLE_SCORE,
        )  # fmt: skip
    return frames


def render_background(identity: Identity, image_size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: a vertical gradient with the identity's pattern (the background does not move)."""
    height, width = image_size
    blend = np.linspace(0.0, 1.0, height)[:, None, None]
    image = (1 - blend) * np.array(identity.background_top) + blend * np.array(identity.background_bottom)
    image = np.broadcast_to(image, (height, width, 3)).copy()
    pattern = identity.background_pattern
    if pattern == "stripes":
        period = max(4, width // 8)
        lighter = ((np.arange(width) // (period // 2)) % 2 == 0)[None, :, None]
        image = np.where(lighter, image * 1.06, image)
    elif pattern == "wall_and_floor":
        floor = int(round(height * 0.72))
        image[floor:] = np.array(identity.background_bottom) * 0.78
        image[floor : floor + max(1, height // 128)] = np.array(identity.background_bottom) * 0.6
    elif pattern == "window":
        # The window hangs on the left or the right, by the parity of the seed.
        top, left = int(height * 0.08), int(width * (0.06 if identity.seed % 2 else 0.66))
        box_h, box_w = int(height * 0.3), int(width * 0.28)
        image[top : top + box_h, left : left + box_w] = image[top : top + box_h, left : left + box_w] * 0.55 + 115
        image[top + box_h // 2 - 1 : top + box_h // 2 + 1, left : left + box_w] *= 0.8
        image[top : top + box_h, left + box_w // 2 - 1 : left + box_w // 2 + 1] *= 0.8
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def draw_person(
    canvas: np.ndarray, identity: Identity, body: np.ndarray, body_visible: np.ndarray, hands: np.ndarray,
    hands_visible: np.ndarray, face: np.ndarray, face_visible: np.ndarray,
) -> None:  # fmt: skip
    """Draw one frame of the person onto canvas (H, W, 3) uint8, in place; points in pixels:
    body (18, 2), hands (2, 21, 2), face (68, 2), with boolean visibility masks of the same leading shapes."""
    head = HeadFrame.from_face(face) if face_visible.all() else None
    torso_visible = body_visible[[NECK, RIGHT_SHOULDER, LEFT_SHOULDER]].all()
    shoulder_width = float(np.hypot(*(body[LEFT_SHOULDER] - body[RIGHT_SHOULDER])))
    outline = max(0.8, OUTLINE_WIDTH * shoulder_width) if torso_visible else 0.8
    if head is not None:
        draw_hair(canvas, head, identity, behind=True, outline=outline)
        if torso_visible:
            draw_neck(canvas, head, body[NECK], identity, outline)
    if torso_visible:
        draw_torso(canvas, body, body_visible, identity, outline)
    if head is not None:
        draw_head(canvas, head, face, identity, outline)
    for shoulder, elbow, wrist in ARMS:
        if torso_visible and body_visible[[shoulder, elbow, wrist]].all():
            draw_arm(canvas, body[shoulder], body[elbow], body[wrist], shoulder_width, identity, outline)
        hand = HAND_OF_WRIST[wrist]
        if hands_visible[hand].all():
            draw_hand(canvas, hands[hand], identity, outline)


# --- parts ---------------------------------------------------------------------------------------------


def draw_neck(canvas: np.ndarray, head: HeadFrame, neck: np.ndarray, identity: Identity, outline: float) -> None:
    """A skin band from under the jaw to the base of the neck (the shirt covers its bottom)."""
    across = head.x_axis * NECK_HALF_WIDTH * head.scale
    down = head.y_axis * 0.5 * head.scale
    top = head.to_image(np.array([[-NECK_HALF_WIDTH, 0.9], [NECK_HALF_WIDTH, 0.9]]))
    polygon = np.array([top[0], top[1], neck + across + down, neck - across + down])
    fill_polygon(canvas, polygon, _shade(identity.skin, 0.88), _shade(identity.skin, 0.6), outline)


def draw_torso(canvas: np.ndarray, body: np.ndarray, body_visible: np.ndarray, identity: Identity, outline: float) -> None:
    """The shirt: shoulders rounded over the shoulder points, sides tapering to the waist at the hips and
    continuing past the bottom of the image, a neckline of the identity's style."""
    right, left, neck = body[RIGHT_SHOULDER], body[LEFT_SHOULDER], body[NECK]
    width = float(np.hypot(*(left - right)))
    across = (left - right) / max(width, 1e-6)
    down = np.array([-across[1], across[0]])
    if body_visible[[RIGHT_HIP, LEFT_HIP]].all():
        hips = (body[RIGHT_HIP] + body[LEFT_HIP]) / 2
    else:
        hips = neck + TORSO_LENGTH * width * down
    along = (hips - neck) / max(float(np.hypot(*(hips - neck))), 1e-6)
    sideways = np.array([along[1], -along[0]])
    build = identity.build
    extent = float(max(canvas.shape[:2]))
    collar = neck - COLLAR_RISE * width * down

    def side(shoulder: np.ndarray, sign: float) -> list[np.ndarray]:
        """Collar to below the image on one side (sign -1 = the person's right, image left)."""
        waist = hips + sign * WAIST_HALF_WIDTH * build * width * sideways
        return [
            collar + sign * COLLAR_HALF_WIDTH * width * across,
            shoulder - sign * 0.02 * width * across - 0.1 * width * down,
            shoulder + sign * 0.12 * width * across + 0.06 * width * down,
            shoulder + sign * 0.07 * build * width * across + 0.45 * width * along,
            waist,
            waist + extent * along,
        ]

    dip = NECKLINE_DIPS[identity.neckline] * width * down
    if identity.neckline == "v":
        neckline = [collar + dip]
    else:  # a U from the left collar back to the right one
        half = 0.6 * COLLAR_HALF_WIDTH * width * across
        neckline = [collar + half + 0.6 * dip, collar + dip, collar - half + 0.6 * dip]
    outline_points = side(right, -1.0) + side(left, 1.0)[::-1] + neckline
    shirt = smooth_curve(np.array(outline_points), closed=True)
    fill_polygon(canvas, shirt, identity.clothing, _shade(identity.clothing, 0.55), outline)
    accent, accent_line = identity.clothing_accent, _shade(identity.clothing_accent, 0.55)
    if identity.neckline == "collar":
        for sign in (-1.0, 1.0):
            base = collar + sign * COLLAR_HALF_WIDTH * width * across
            tip = collar + sign * 0.02 * width * across + 1.6 * dip
            flap = np.array([base, tip, base + 0.9 * dip - sign * 0.05 * width * across])
            fill_polygon(canvas, flap, accent, accent_line, outline)
    else:
        trim = np.array([outline_points[-len(neckline) - 1], *neckline, outline_points[0]])
        stroke(canvas, smooth_curve(trim, closed=False), accent, 1.2 * outline + 0.01 * width)


def draw_head(canvas: np.ndarray, head: HeadFrame, face: np.ndarray, identity: Identity, outline: float) -> None:
    skin, skin_line = identity.skin, _shade(identity.skin, 0.6)
    for sign in (-1.0, 1.0):
        centre = head.to_image(np.array([sign * identity.face_width * EAR_CENTRE[0], EAR_CENTRE[1]]))
        axes = np.multiply(EAR_AXES, head.scale)
        fill_ellipse(canvas, centre, axes, head.angle_deg, _shade(skin, 0.93), skin_line, outline)
    fill_polygon(canvas, head_outline(head, face, identity), skin, skin_line, outline)
    draw_nose(canvas, face, head, identity)
    draw_mouth(canvas, face, identity, outline)
    for eye in EYES:
        draw_eye(canvas, face[list(eye)], identity)
    brow_colour = _shade(identity.hair, 0.7) if identity.hair_style != "bald" else _shade(identity.skin, 0.45)
    for brow in BROWS:
        stroke(canvas, smooth_curve(face[brow], closed=False), brow_colour, identity.brow_thickness * head.scale)
    draw_hair(canvas, head, identity, behind=False, outline=outline)


def head_outline(head: HeadFrame, face: np.ndarray, identity: Identity) -> np.ndarray:
    """(N, 2) closed outline: the jaw contour (widened and tapered by the identity) and the skull above
    the temples, a half ellipse cranium_height high."""
    contour = head.to_local(face[CONTOUR])
    chin_depth = max(float(contour[CHIN, 1]), 1e-6)
    taper = 1.0 - identity.jaw_taper * np.clip(contour[:, 1] / chin_depth, 0.0, 1.0) ** 2
    contour[:, 0] *= identity.face_width * taper
    angles = np.linspace(0.0, np.pi, 11)[1:-1]
    skull = np.stack([identity.face_width * np.cos(angles), -identity.cranium_height * np.sin(angles)], axis=-1)
    return smooth_curve(head.to_image(np.concatenate([contour, skull])), closed=True)


def draw_eye(canvas: np.ndarray, eye: np.ndarray, identity: Identity) -> None:
    """eye (6, 2): corner, two upper-lid points, corner, two lower-lid points. White, iris and pupil inside
    the lids (scaled about the eye centre by eye_scale, EYE_ROUNDNESS times more across the lids), a lash
    line along the upper lid."""
    centre = (eye[0] + eye[3]) / 2
    across = (eye[3] - eye[0]) / max(float(np.hypot(*(eye[3] - eye[0]))), 1e-6)
    up_down = np.array([-across[1], across[0]])
    relative = eye - centre
    # Scaled in the eye's own frame, taller than wide: a cartoon eye, still closed when the lids meet.
    scaled = centre + identity.eye_scale * (
        np.outer(relative @ across, across) + EYE_ROUNDNESS * np.outer(relative @ up_down, up_down)
    )
    upper = smooth_curve(scaled[[0, 1, 2, 3]], closed=False)
    lower = smooth_curve(scaled[[3, 4, 5, 0]], closed=False)
    opening = np.concatenate([upper, lower[1:-1]])
    eye_width = float(np.hypot(*(scaled[3] - scaled[0])))
    iris = IRIS_RADIUS * eye_width
    if polygon_area(opening) >= MIN_OPEN_AREA_PX:

        def paint(layer: np.ndarray, offset: np.ndarray) -> None:
            layer[:] = SCLERA
            fill_circle(layer, centre - offset, iris, identity.iris)
            fill_circle(layer, centre - offset, 0.5 * iris, PUPIL)
            fill_circle(layer, centre - offset + np.array([-0.35, -0.4]) * iris, 0.28 * iris, SCLERA)

        paint_clipped(canvas, opening, paint)
    stroke(canvas, upper, LASH, max(0.6, 0.07 * eye_width))


def draw_mouth(canvas: np.ndarray, face: np.ndarray, identity: Identity, outline: float) -> None:
    """Lips on the outer contour; when the inner contour is open, the dark inside with upper teeth and a
    tongue, clipped to the opening. All scaled about the mouth centre by mouth_scale."""
    centre = face[OUTER_LIPS].mean(axis=0)

    def scaled(points: np.ndarray) -> np.ndarray:
        return centre + identity.mouth_scale * (points - centre)

    lips = smooth_curve(scaled(face[OUTER_LIPS]), closed=True)
    fill_polygon(canvas, lips, identity.lips, _shade(identity.lips, 0.65), 0.7 * outline)
    opening = smooth_curve(scaled(face[INNER_LIPS]), closed=True)
    corners = scaled(face[list(MOUTH_CORNERS)])
    mouth_width = float(np.hypot(*(corners[1] - corners[0])))
    across = (corners[1] - corners[0]) / max(mouth_width, 1e-6)
    upper_lip = smooth_curve(scaled(face[list(INNER_UPPER_LIP)]), closed=False)
    if polygon_area(opening) >= MIN_OPEN_AREA_PX:
        lower_middle = scaled(face[66])
        down = TEETH_HEIGHT * mouth_width * np.array([-across[1], across[0]])  # towards the chin
        tilt = float(np.degrees(np.arctan2(across[1], across[0])))

        def paint(layer: np.ndarray, offset: np.ndarray) -> None:
            layer[:] = MOUTH_INSIDE
            teeth = np.concatenate([upper_lip, (upper_lip + down)[::-1]]) - offset
            fill_polygon(layer, teeth, TEETH)
            fill_ellipse(layer, lower_middle - offset, (0.24 * mouth_width, 0.12 * mouth_width), tilt, TONGUE)

        paint_clipped(canvas, opening, paint)
    stroke(canvas, upper_lip, _shade(identity.lips, 0.5), 0.6 * outline)


def draw_nose(canvas: np.ndarray, face: np.ndarray, head: HeadFrame, identity: Identity) -> None:
    shade = _shade(identity.skin, 0.72)
    stroke(canvas, smooth_curve(face[NOSTRILS], closed=False), shade, 0.05 * head.scale)
    stroke(canvas, face[NOSE_BRIDGE][1:], _shade(identity.skin, 0.85), 0.035 * head.scale)


def draw_hair(canvas: np.ndarray, head: HeadFrame, identity: Identity, behind: bool, outline: float) -> None:
    """The identity's hair style, rigid in the head frame: the parts behind the head (long hair, bun,
    curls) when ``behind``, else the cap over the skull with its hairline."""
    style = identity.hair_style
    if style == "bald":
        return
    colour, line = identity.hair, _shade(identity.hair, 0.65)
    width, height = identity.face_width, identity.cranium_height

    def skull_arc(grow: float, start: float, stop: float, count: int = 14) -> np.ndarray:
        angles = np.linspace(start, stop, count)
        return np.stack([grow * width * np.cos(angles), -grow * height * np.sin(angles)], axis=-1)

    if behind:
        if style == "long":
            # Over the skull from the person's right to their left, down to the shoulders and back up.
            down_the_back = [[1.2 * width, 0.8], [1.35 * width, 2.7], [-1.35 * width, 2.7], [-1.2 * width, 0.8]]
            back = np.concatenate([skull_arc(1.12, np.pi, 0.0), down_the_back])
            fill_polygon(canvas, smooth_curve(head.to_image(back), closed=True), _shade(colour, 0.85), line, outline)
        elif style == "bun":
            fill_circle(canvas, head.to_image(np.array([0.0, -height - 0.25])), 0.45 * head.scale, colour, line, outline)
        elif style == "curly":
            for u, v in skull_arc(1.12, -0.35, np.pi + 0.35, 12):
                fill_circle(canvas, head.to_image(np.array([u, v])), 0.38 * head.scale, colour, line, outline)
        return

    hairlines = {
        "short": [(0.98, 0.15), (0.9, -0.45), (0.5, -0.85), (0.0, -0.92), (-0.5, -0.85), (-0.9, -0.45), (-0.98, 0.15)],
        "long": [(0.98, 0.3), (0.88, -0.4), (0.45, -0.75), (0.05, -0.98), (-0.45, -0.75), (-0.88, -0.4), (-0.98, 0.3)],
        "side_part": [(0.98, 0.1), (0.85, -0.5), (0.3, -0.72), (-0.4, -0.95), (-0.85, -0.62), (-0.98, 0.1)],
        "fringe": [(0.98, 0.1), (0.9, -0.5)]
        + [(u, -0.52 if i % 2 == 0 else -0.64) for i, u in enumerate(np.linspace(0.78, -0.78, 9))]  # zigzag
        + [(-0.9, -0.5), (-0.98, 0.1)],
    }  # fmt: skip
    hairline = hairlines.get(style, hairlines["short"])
    hairline = np.array([(u * width, v) for u, v in hairline])
    # Over the skull from the person's left side to their right, then back along the hairline.
    cap = np.concatenate([skull_arc(1.07, -0.22, np.pi + 0.22), hairline[::-1]])
    fill_polygon(canvas, smooth_curve(head.to_image(cap), closed=True), colour, line, outline)
    if style == "side_part":
        stroke(canvas, head.to_image(np.array([[-0.4 * width, -0.95], [-0.28 * width, -1.05 * height]])), line, outline)
    if style == "curly":
        for u, v in hairline[1:-1]:
            fill_circle(canvas, head.to_image(np.array([u, v - 0.05])), 0.2 * head.scale, colour, line, outline)


def draw_arm(
    canvas: np.ndarray, shoulder: np.ndarray, elbow: np.ndarray, wrist: np.ndarray, shoulder_width: float,
    identity: Identity, outline: float,
) -> None:  # fmt: skip
    """Skin arm (upper arm and forearm capsules) with a sleeve over it, short or long."""
    upper, fore = UPPER_ARM_RADIUS * shoulder_width * identity.build, FOREARM_RADIUS * shoulder_width * identity.build
    skin_line = _shade(identity.skin, 0.6)
    cloth, cloth_line = identity.clothing, _shade(identity.clothing, 0.55)
    capsule_chain(canvas, [shoulder, elbow, wrist], [upper, fore], identity.skin, skin_line, outline)
    if identity.sleeves == "long":
        capsule_chain(canvas, [shoulder, elbow, wrist], [1.08 * upper, 1.08 * fore], cloth, cloth_line, outline)
    else:
        sleeve_end = shoulder + SHORT_SLEEVE_LENGTH * (elbow - shoulder)
        capsule_chain(canvas, [shoulder, sleeve_end], [1.12 * upper], cloth, cloth_line, outline)


def draw_hand(canvas: np.ndarray, hand: np.ndarray, identity: Identity, outline: float) -> None:
    """hand (21, 2): a palm on the wrist and finger bases, then each finger as capsules along its joints,
    back to front, each with an outline so overlapping fingers stay apart."""
    palm_length = float(np.hypot(*(hand[9] - hand[0])))
    skin, line = identity.skin, _shade(identity.skin, 0.55)
    # The palm: the hull of the wrist and finger bases, padded so that a hand seen edge-on keeps a palm.
    palm = cv2.convexHull(hand[list(PALM_POINTS)].astype(np.float32)).reshape(-1, 2).astype(np.float64)
    ring = [*palm, palm[0]]
    capsule_chain(canvas, ring, [PALM_PADDING * palm_length] * len(palm), skin, line, outline)
    fill_polygon(canvas, palm, skin)
    for finger in FINGERS_BACK_TO_FRONT:
        radius = (THUMB_RADIUS if finger[0] == 1 else FINGER_RADIUS) * palm_length
        capsule_chain(canvas, list(hand[list(finger)]), [radius] * 3, skin, line, outline)


# --- drawing primitives ---------------------------------------------------------------------------------


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 fixed point with SUBPIXEL_BITS fractional bits (OpenCV's `shift`)."""
    return np.round(np.asarray(points, dtype=np.float64) * (1 << SUBPIXEL_BITS)).astype(np.int32)


def _fixed_tuple(point: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in _fixed(point))


def fill_polygon(
    canvas: np.ndarray, points: np.ndarray, colour: RGB, line: RGB | None = None, line_width: float = 1.0
) -> None:
    """Fill a polygon (N, 2), optionally with an outline of ``line_width`` pixels."""
    fixed = _fixed(points)
    cv2.fillPoly(canvas, [fixed], colour, cv2.LINE_AA, SUBPIXEL_BITS)
    if line is not None:
        cv2.polylines(canvas, [fixed], True, line, max(1, int(round(line_width))), cv2.LINE_AA, SUBPIXEL_BITS)


def fill_circle(
    canvas: np.ndarray, centre: np.ndarray, radius: float, colour: RGB, line: RGB | None = None, line_width: float = 1.0
) -> None:
    """A filled disc, optionally ringed by ``line`` ``line_width`` pixels wide."""
    if line is not None:
        cv2.circle(canvas, _fixed_tuple(centre), int(_fixed(radius + line_width)), line, -1, cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.circle(canvas, _fixed_tuple(centre), int(_fixed(radius)), colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)


def fill_ellipse(
    canvas: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle_deg: float, colour: RGB,
    line: RGB | None = None, line_width: float = 1.0,
) -> None:  # fmt: skip
    centre_fixed, axes_fixed = _fixed_tuple(centre), _fixed_tuple(axes)
    cv2.ellipse(canvas, centre_fixed, axes_fixed, angle_deg, 0, 360, colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)
    if line is not None:
        thickness = max(1, int(round(line_width)))
        cv2.ellipse(canvas, centre_fixed, axes_fixed, angle_deg, 0, 360, line, thickness, cv2.LINE_AA, SUBPIXEL_BITS)


def capsules(starts: np.ndarray, ends: np.ndarray, radii: np.ndarray, samples: int = 8) -> np.ndarray:
    """(S, 2 * samples + 2, 2) int32 fixed-point polygons of the points within radii (S,) of the segments
    starts (S, 2) -> ends (S, 2): a half circle around each end joined by straight sides."""
    starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    direction = ends - starts
    length = np.hypot(direction[:, 0], direction[:, 1])[:, None]
    direction = np.where(length > 1e-9, direction / np.maximum(length, 1e-9), [1.0, 0.0])
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=-1)
    half = np.linspace(-np.pi / 2, np.pi / 2, samples + 1)
    # The half circle around the end, facing along the segment, in image coordinates: (S, samples + 1, 2).
    around = np.cos(half)[None, :, None] * direction[:, None] + np.sin(half)[None, :, None] * normal[:, None]
    around = around * np.asarray(radii, dtype=np.float64).reshape(-1, 1, 1)
    return _fixed(np.concatenate([ends[:, None] + around, starts[:, None] - around], axis=1))


def capsule_chain(
    canvas: np.ndarray, points: list[np.ndarray], radii: list[float], colour: RGB, line: RGB, line_width: float
) -> None:
    """Segments points[i] -> points[i + 1] with radii[i]: all outlines first, then all fills, so the chain
    reads as one limb with one outline. One fillPoly call per polygon: within one call OpenCV fills by
    the even-odd rule, which would cut the overlaps out."""
    points, radii = np.asarray(points, dtype=np.float64), np.asarray(radii, dtype=np.float64)
    for grow, fill in ((line_width, line), (0.0, colour)):
        for polygon in capsules(points[:-1], points[1:], radii + grow):
            cv2.fillPoly(canvas, [polygon], fill, cv2.LINE_AA, SUBPIXEL_BITS)


def stroke(canvas: np.ndarray, points: np.ndarray, colour: RGB, width: float) -> None:
    """A polyline (N, 2) ``width`` pixels wide with round ends, sub-pixel accurate."""
    points = np.asarray(points, dtype=np.float64)
    for polygon in capsules(points[:-1], points[1:], np.full(len(points) - 1, width / 2), samples=4):
        cv2.fillPoly(canvas, [polygon], colour, cv2.LINE_AA, SUBPIXEL_BITS)


def paint_clipped(canvas: np.ndarray, polygon: np.ndarray, paint: Callable[[np.ndarray, np.ndarray], None]) -> None:
    """Let ``paint(layer, offset)`` draw into a copy of the polygon's bounding box (offset = its top-left
    corner in pixels) and blend the result into canvas inside the (anti-aliased) polygon only."""
    height, width = canvas.shape[:2]
    low = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 1, 0)
    high = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 2, [width, height])
    if (high <= low).any():
        return
    region = canvas[low[1] : high[1], low[0] : high[0]]
    mask = np.zeros(region.shape[:2], np.uint8)
    cv2.fillPoly(mask, [_fixed(polygon - low)], 255, cv2.LINE_AA, SUBPIXEL_BITS)
    layer = region.copy()
    paint(layer, low.astype(np.float64))
    alpha = mask[..., None].astype(np.uint16)
    region[:] = ((region * (255 - alpha) + layer * alpha + 127) // 255).astype(np.uint8)


def smooth_curve(points: np.ndarray, closed: bool, samples: int = CURVE_SAMPLES) -> np.ndarray:
    """A uniform Catmull-Rom spline through points (N, 2), ``samples`` points per segment; an open curve
    keeps both end points."""
    points = np.asarray(points, dtype=np.float64)
    if closed:
        padded = np.concatenate([points[-1:], points, points[:2]])
    else:
        padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    t = np.arange(samples) / samples
    # Catmull-Rom basis: weights of p0..p3 at each t.
    basis = 0.5 * np.stack(
        [-t**3 + 2 * t**2 - t, 3 * t**3 - 5 * t**2 + 2, -3 * t**3 + 4 * t**2 + t, t**3 - t**2], axis=-1
    )
    windows = np.stack([padded[i : len(padded) - 3 + i] for i in range(4)], axis=1)  # (segments, 4, 2)
    curve = np.einsum("tk,skc->stc", basis, windows).reshape(-1, 2)
    return curve if closed else np.concatenate([curve, points[-1:]])


def polygon_area(points: np.ndarray) -> float:
    """Area (pixels) of a simple polygon (N, 2), by the shoelace formula."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(round(min(255.0, c * factor))) for c in colour)
