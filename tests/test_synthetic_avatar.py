"""The cartoon renderer: deterministic, and every visible feature follows its keypoints (known colours at
known places); the speech synthesiser: seeded, with syllables where it planned them and the pitch asked for."""

from __future__ import annotations

import numpy as np
import pytest

from iasa.motion.motion_file import SmplxMotion
from iasa.motion.procedural import ProceduralMotionConfig, detect_onsets, frame_loudness, smooth_envelope
from iasa.pose.drawing import draw_pose_frames
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.pipeline import motion_to_keypoints
from iasa.pose.skeleton import BLINK_EXPRESSION_INDEX
from iasa.synthetic.avatar import MOUTH_INSIDE, PUPIL, SCLERA, TEETH, render_avatar, render_background, smooth_curve
from iasa.synthetic.dataset import IdentitySpec, SyntheticDatasetConfig, reference_keypoints
from iasa.synthetic.identity import Identity
from iasa.synthetic.speech import SAMPLE_RATE, SpeechConfig, plan_syllables, synthesize_speech

SIZE = 512  # features a few pixels wide at 256 get tens of pixels of each colour here
PERSON = IdentitySpec(name="p", seed=7, framed_height_m=0.8, frame_center_above_pelvis_m=0.38)
JAW = 22


@pytest.fixture(scope="module")
def rest() -> WholeBodyKeypoints:
    return reference_keypoints(PERSON, SyntheticDatasetConfig(size=SIZE))


def pixels(keypoints: WholeBodyKeypoints, part: str) -> np.ndarray:
    return getattr(keypoints, part)[0] * SIZE


def colour_count(image: np.ndarray, colour: tuple[int, int, int], box: tuple[slice, slice] | None = None) -> int:
    region = image if box is None else image[box]
    return int((region == np.array(colour, np.uint8)).all(axis=-1).sum())


def box_around(points: np.ndarray, margin: int = 6) -> tuple[slice, slice]:
    low, high = np.floor(points.min(0)).astype(int) - margin, np.ceil(points.max(0)).astype(int) + margin
    return slice(max(low[1], 0), high[1]), slice(max(low[0], 0), high[0])


def edited(keypoints: WholeBodyKeypoints, face: np.ndarray) -> WholeBodyKeypoints:
    """keypoints with the face landmarks replaced by ``face`` (68, 2) in pixels."""
    return WholeBodyKeypoints(
        keypoints.body, keypoints.body_score, keypoints.hands, keypoints.hands_score,
        (face / SIZE)[None].astype(np.float32), keypoints.face_score, keypoints.image_size,
    )  # fmt: skip


def test_render_is_a_pure_function_with_the_identity_colours_in_place(rest: WholeBodyKeypoints) -> None:
    identity = Identity.sample(PERSON.seed)
    assert Identity.sample(PERSON.seed) == identity
    image = render_avatar(rest, identity)[0]
    np.testing.assert_array_equal(render_avatar(rest, identity)[0], image)
    face, body = pixels(rest, "face"), pixels(rest, "body")

    def at(point: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in image[int(round(point[1])), int(round(point[0]))])

    assert at(np.array([0.0, 0.0])) == identity.background_top  # gradient starts at the top row
    assert at((face[30] + face[3]) / 2) == identity.skin  # the cheek, between nose tip and jaw
    assert at(0.7 * body[2] + 0.3 * body[8] + [8, 0]) == identity.clothing  # the chest below the right shoulder
    # A different person differs in the same places.
    other = Identity.sample(PERSON.seed + 1)
    assert (other.skin, other.clothing, other.background_top) != (identity.skin, identity.clothing, identity.background_top)
    assert not np.array_equal(render_avatar(rest, other)[0], image)


def test_identities_vary_across_seeds() -> None:
    people = [Identity.sample(seed) for seed in range(40)]
    for trait in ("skin_name", "hair_name", "hair_style", "clothing_name", "sleeves", "neckline", "background_pattern"):
        assert len({getattr(person, trait) for person in people}) >= 2, trait
    assert np.ptp([person.face_width for person in people]) > 0.1
    assert len({person.describe() for person in people}) == 40


def test_mouth_interior_appears_when_the_lips_part(rest: WholeBodyKeypoints) -> None:
    identity = Identity.sample(PERSON.seed)
    face = pixels(rest, "face").astype(np.float64)
    closed, opened = face.copy(), face.copy()
    closed[[67, 66, 65]] = face[[61, 62, 63]]  # lower inner lip onto the upper one
    opened[55:60] += [0.0, 12.0]  # the lower lip drops by 12 pixels (a wide-open mouth at this size)
    opened[65:68] += [0.0, 12.0]
    closed_image = render_avatar(edited(rest, closed), identity)[0]
    open_image = render_avatar(edited(rest, opened), identity)[0]
    mouth = box_around(opened[48:68])
    assert colour_count(closed_image, MOUTH_INSIDE, mouth) == 0 and colour_count(closed_image, TEETH, mouth) == 0
    assert colour_count(open_image, MOUTH_INSIDE, mouth) >= 60 and colour_count(open_image, TEETH, mouth) >= 30
    assert colour_count(open_image, MOUTH_INSIDE) == colour_count(open_image, MOUTH_INSIDE, mouth)  # nowhere else
    eyes = box_around(face[36:48])
    np.testing.assert_array_equal(closed_image[eyes], open_image[eyes])  # the mouth moves nothing else


def test_eyes_close_when_the_lid_points_meet(rest: WholeBodyKeypoints) -> None:
    identity = Identity.sample(PERSON.seed)
    face = pixels(rest, "face").astype(np.float64)
    closed = face.copy()
    closed[[37, 38, 43, 44]] = face[[41, 40, 47, 46]]  # upper lids down onto the lower lids
    open_image = render_avatar(rest, identity)[0]
    closed_image = render_avatar(edited(rest, closed), identity)[0]
    for eye in (slice(36, 42), slice(42, 48)):
        box = box_around(face[eye])
        assert colour_count(open_image, SCLERA, box) >= 10 and colour_count(open_image, PUPIL, box) >= 8
        assert colour_count(closed_image, SCLERA, box) == 0 and colour_count(closed_image, PUPIL, box) == 0


def test_a_blink_in_the_motion_closes_the_rendered_eyes() -> None:
    """Expression -> built-in skeleton -> face landmarks -> render: the blink reaches the picture."""
    frames = 2
    expressions = np.zeros((frames, 100), np.float32)
    expressions[1, BLINK_EXPRESSION_INDEX] = 1.0
    motion = SmplxMotion(
        poses=np.zeros((frames, 165), np.float32), expressions=expressions, trans=np.zeros((frames, 3), np.float32),
        betas=np.zeros(300, np.float32), fps=30.0,
    )  # fmt: skip
    keypoints = motion_to_keypoints(motion, PERSON.pose_config(SIZE))
    face = keypoints.face * SIZE
    lid_gap = face[:, [41, 40, 47, 46], 1] - face[:, [37, 38, 43, 44], 1]
    assert lid_gap[0].min() > 1.5 and np.abs(lid_gap[1]).max() < 0.05
    video = render_avatar(keypoints, Identity.sample(3))
    box = box_around(face[0, 36:48])
    assert colour_count(video[0], SCLERA, box) >= 8 and colour_count(video[1], SCLERA, box) == 0


def test_jaw_rotation_opens_the_landmark_mouth() -> None:
    poses = np.zeros((2, 165), np.float32)
    poses[1, 3 * JAW] = 0.3
    motion = SmplxMotion(
        poses=poses, expressions=np.zeros((2, 100), np.float32), trans=np.zeros((2, 3), np.float32),
        betas=np.zeros(300, np.float32), fps=30.0,
    )  # fmt: skip
    face = motion_to_keypoints(motion, PERSON.pose_config(SIZE)).face * SIZE
    inner_gap = face[:, 66, 1] - face[:, 62, 1]
    assert inner_gap[1] > inner_gap[0] + 4.0  # the lower lip drops with the jaw ...
    np.testing.assert_allclose(face[1, 17:48], face[0, 17:48], atol=1e-4)  # ... brows and eyes stay


def hand_only_keypoints() -> tuple[WholeBodyKeypoints, np.ndarray]:
    """One frame with only the person's left hand visible: a flat open hand, fingers pointing up, in
    pixels: wrist at (128, 200), finger bases on a row at y = 170, fingers 32 px long, 14 px apart."""
    hand = np.zeros((21, 2))
    hand[0] = (128, 200)
    for finger, x in enumerate((92, 104, 118, 132, 146)):  # thumb (out to the side), index, middle, ring, pinky
        base_y = 185 if finger == 0 else 170
        for joint in range(4):
            hand[1 + 4 * finger + joint] = (x - (3 - joint) * 4 * (finger == 0), base_y - joint * 10.7)
    hands = np.zeros((1, 2, 21, 2), np.float32)
    hands[0, 0] = hand / SIZE
    hands_score = np.zeros((1, 2, 21), np.float32)
    hands_score[0, 0] = 1.0
    keypoints = WholeBodyKeypoints(
        body=np.full((1, 18, 2), 0.5, np.float32), body_score=np.zeros((1, 18), np.float32), hands=hands,
        hands_score=hands_score, face=np.full((1, 68, 2), 0.5, np.float32), face_score=np.zeros((1, 68), np.float32),
        image_size=(SIZE, SIZE),
    )  # fmt: skip
    return keypoints, hand


def test_fingers_are_drawn_on_the_hand_points_and_nothing_else() -> None:
    keypoints, hand = hand_only_keypoints()
    identity = Identity.sample(11)
    image = render_avatar(keypoints, identity)[0]
    background = render_avatar(keypoints.slice_frames(0, 0), identity)  # no frames: nothing to draw
    assert background.shape == (0, SIZE, SIZE, 3)
    for finger in range(1, 5):
        for joint in (2, 3):  # the middle of the two outer finger segments
            middle = (hand[4 * finger + joint - 1] + hand[4 * finger + joint]) / 2
            assert tuple(image[int(round(middle[1])), int(round(middle[0]))]) == identity.skin
        tip_gap = (hand[4 * finger] + hand[4 * finger + 4]) / 2 if finger < 4 else None
        if tip_gap is not None:  # between two finger tips the background shows
            assert tuple(image[int(round(tip_gap[1])), int(round(tip_gap[0]))]) != identity.skin
    # Outside the hand's box the image is the plain background: no face, body or arms were drawn.
    plain = render_background(identity, (SIZE, SIZE))
    mask = np.ones((SIZE, SIZE), bool)
    mask[box_around(hand, margin=10)] = False
    np.testing.assert_array_equal(image[mask], plain[mask])


def test_pose_image_lines_up_with_the_render(rest: WholeBodyKeypoints) -> None:
    """Every face landmark and hand point of the pose image falls on the person, not on the background."""
    identity = Identity.sample(PERSON.seed)
    image = render_avatar(rest, identity)[0]
    plain = render_background(identity, (SIZE, SIZE))
    pose = draw_pose_frames(rest, "face")[0]
    points = np.concatenate([pixels(rest, "face"), pixels(rest, "hands").reshape(-1, 2)])
    for x, y in points.astype(int):
        assert pose[y, x].any()  # the pose image has the point there ...
        assert not np.array_equal(image[y, x], plain[y, x])  # ... and the render has the person there


def test_smooth_curve_passes_through_its_points() -> None:
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    closed = smooth_curve(square, closed=True, samples=4)
    np.testing.assert_allclose(closed[::4], square)
    line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(smooth_curve(line, closed=False, samples=5), np.linspace([0, 0], [2, 2], 11), atol=1e-12)


def test_speech_is_seeded_and_sized() -> None:
    first = synthesize_speech(1.5, seed=4)
    np.testing.assert_array_equal(first, synthesize_speech(1.5, seed=4))
    assert first.dtype == np.float32 and first.shape == (24000,)
    assert abs(np.abs(first).max() - SpeechConfig().peak) < 1e-6
    assert not np.array_equal(first, synthesize_speech(1.5, seed=5))


def test_speech_syllables_are_heard_where_planned() -> None:
    """The motion stage's own onset detector finds every phrase start of the plan (a syllable after a pause)."""
    config, seconds = SpeechConfig(tempo=4.0), 12.0
    waveform = synthesize_speech(seconds, seed=9, config=config)
    plan = plan_syllables(seconds, config, np.random.default_rng(9))
    motion_config = ProceduralMotionConfig()
    frames = int(seconds * 30)
    loudness = frame_loudness(waveform, frames, motion_config)
    onsets = detect_onsets(smooth_envelope(loudness, 2.0), motion_config) / 30
    phrase_starts = [
        syllable.start_s for previous, syllable in zip([None, *plan], plan)
        if previous is None or syllable.start_s - (previous.start_s + previous.duration_s) > 0.15
    ]  # fmt: skip
    assert len(phrase_starts) >= 3
    for start in phrase_starts:
        assert np.abs(onsets - start).min() < 0.1
    # Silence between phrases: the loudness is zero somewhere in every pause longer than 0.2 s.
    for previous, syllable in zip(plan, plan[1:]):
        pause = (previous.start_s + previous.duration_s, syllable.start_s)
        if pause[1] - pause[0] > 0.2:
            assert loudness[int(np.ceil(pause[0] * 30)) : int(pause[1] * 30)].min() == 0.0


def test_faster_tempo_more_syllables_and_the_pitch_asked_for() -> None:
    slow = plan_syllables(20.0, SpeechConfig(tempo=2.5), np.random.default_rng(0))
    fast = plan_syllables(20.0, SpeechConfig(tempo=6.0), np.random.default_rng(0))
    assert len(fast) > 1.6 * len(slow)
    config = SpeechConfig(pitch_hz=150.0, accent_semitones=0.0, declination_semitones=0.0, consonant_probability=0.0)
    waveform = synthesize_speech(2.0, seed=1, config=config)
    syllable = plan_syllables(2.0, config, np.random.default_rng(1))[0]
    middle = int((syllable.start_s + syllable.duration_s / 2) * SAMPLE_RATE)
    window = waveform[middle - 400 : middle + 400].astype(np.float64)
    correlation = np.correlate(window, window, "full")[len(window) - 1 :]
    lags = np.arange(len(correlation))
    plausible = (lags > SAMPLE_RATE / 400) & (lags < SAMPLE_RATE / 60)
    period = lags[plausible][np.argmax(correlation[plausible])]
    assert abs(SAMPLE_RATE / period - 150.0) < 6.0
