"""Local mask: region polygons rasterised in pixels and pooled to the token grid."""

import numpy as np
import pytest

from iasa.attention import SparseAttentionConfig, build_sparse_layout
from iasa.attention.regions import REGION_DRAWERS, frame_shapes, label_tokens, region_token_masks
from iasa.pose.keypoints import BODY_NAMES, WholeBodyKeypoints
from iasa.pose.synthetic_speaker import synthetic_speaker


def empty_keypoints(frames: int, image_size=(64, 64)) -> WholeBodyKeypoints:
    """Every point missing (score 0)."""
    return WholeBodyKeypoints(
        body=np.zeros((frames, 18, 2), np.float32), body_score=np.zeros((frames, 18), np.float32),
        hands=np.zeros((frames, 2, 21, 2), np.float32), hands_score=np.zeros((frames, 2, 21), np.float32),
        face=np.zeros((frames, 68, 2), np.float32), face_score=np.zeros((frames, 68), np.float32),
        image_size=image_size,
    )  # fmt: skip


def place_square(points, scores, frame, index_slice, x0, y0, x1, y1):
    """Put points on the corners (and centre) of a square, in normalised coordinates."""
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [(x0 + x1) / 2, (y0 + y1) / 2]], np.float32)
    target = points[frame][index_slice]
    target[: len(corners)] = corners[: len(target)]
    target[len(corners) :] = corners[-1]
    scores[frame][index_slice] = 1.0


def config(**changes) -> SparseAttentionConfig:
    return SparseAttentionConfig(**{"dilation_tokens": 0, **changes})


def test_a_square_face_fills_exactly_its_tokens():
    keypoints = empty_keypoints(1)
    # Pixels 16..40 of a 64-pixel image: token 1 fully, token 2 half.
    place_square(keypoints.face, keypoints.face_score, 0, slice(None), 0.25, 0.25, 40 / 64, 40 / 64)
    masks = region_token_masks(keypoints, config(regions=("face",), min_token_coverage=0.6), (4, 4))
    assert masks.shape == (1, 1, 4, 4)
    assert np.argwhere(masks[0, 0]).tolist() == [[1, 1]]
    masks = region_token_masks(keypoints, config(regions=("face",), min_token_coverage=0.25), (4, 4))
    assert np.argwhere(masks[0, 0]).tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]


def test_priority_follows_config_order_and_ids_start_at_one():
    keypoints = empty_keypoints(1)
    place_square(keypoints.face, keypoints.face_score, 0, slice(None), 0.0, 0.0, 0.5, 0.5)
    place_square(keypoints.hands[:, 1], keypoints.hands_score[:, 1], 0, slice(None), 0.25, 0.25, 0.75, 0.75)
    face_first = label_tokens(region_token_masks(keypoints, config(regions=("face", "right_hand")), (4, 4)))
    hand_first = label_tokens(region_token_masks(keypoints, config(regions=("right_hand", "face")), (4, 4)))
    overlap = 1 * 4 + 1  # token (1, 1) lies in both squares
    assert face_first[0, overlap] == 1 and hand_first[0, overlap] == 1  # the first listed: id 1
    assert face_first[0, 2 * 4 + 2] == 2 and hand_first[0, 0] == 2
    assert face_first[0, 3 * 4 + 3] == 0  # background


def test_hands_as_one_region_or_two():
    keypoints = empty_keypoints(1)
    place_square(keypoints.hands[:, 0], keypoints.hands_score[:, 0], 0, slice(None), 0.0, 0.0, 0.25, 0.25)
    place_square(keypoints.hands[:, 1], keypoints.hands_score[:, 1], 0, slice(None), 0.75, 0.75, 1.0, 1.0)
    merged = label_tokens(region_token_masks(keypoints, config(regions=("hands",)), (4, 4)))[0]
    split = label_tokens(region_token_masks(keypoints, config(regions=("left_hand", "right_hand")), (4, 4)))[0]
    assert merged[0] == merged[15] == 1
    assert split[0] == 1 and split[15] == 2


def test_regions_are_or_ed_over_the_video_frames_of_a_latent_frame():
    keypoints = empty_keypoints(5)
    place_square(keypoints.face, keypoints.face_score, 0, slice(None), 0.0, 0.0, 0.25, 0.25)
    place_square(keypoints.face, keypoints.face_score, 1, slice(None), 0.75, 0.0, 1.0, 0.25)
    place_square(keypoints.face, keypoints.face_score, 4, slice(None), 0.75, 0.75, 1.0, 1.0)
    masks = region_token_masks(keypoints, config(regions=("face",)), (4, 4))
    assert np.argwhere(masks[0, 0]).tolist() == [[0, 0]]  # latent 0 = video frame 0 alone
    assert np.argwhere(masks[1, 0]).tolist() == [[0, 3], [3, 3]]  # latent 1 = video frames 1..4


def test_dilation_grows_a_region_by_whole_tokens():
    keypoints = empty_keypoints(1, (80, 80))
    place_square(keypoints.face, keypoints.face_score, 0, slice(None), 0.4, 0.4, 0.6, 0.6)
    masks = region_token_masks(keypoints, config(regions=("face",), dilation_tokens=1), (5, 5))
    assert np.argwhere(masks[0, 0]).tolist() == [[r, c] for r in range(1, 4) for c in range(1, 4)]


def test_arms_are_thick_limbs_between_confident_joints():
    keypoints = empty_keypoints(1, (128, 128))
    joints = {"right_shoulder": (0.1, 0.3), "left_shoulder": (0.9, 0.3), "right_elbow": (0.1, 0.9)}
    for name, point in joints.items():
        keypoints.body[0, BODY_NAMES.index(name)] = point
        keypoints.body_score[0, BODY_NAMES.index(name)] = 1.0
    masks = region_token_masks(keypoints, config(regions=("arms",), limb_width=0.15), (8, 8))[0, 0]
    # Shoulder line along token row 2 and the right upper arm down column 0; the left arm is missing.
    assert masks[2, 1:7].all() and masks[3:7, 0].all()
    assert not masks[5:, 3:].any()


def test_synthetic_speaker_has_the_intended_region_sizes():
    keypoints = synthetic_speaker(21, (256, 448), seed=0)
    frames = frame_shapes(keypoints, keypoints.image_size, SparseAttentionConfig())
    area = {}
    for name in ("face", "left_hand", "right_hand", "arms"):
        fractions = []
        for frame in frames:
            canvas = np.zeros(keypoints.image_size, np.uint8)
            REGION_DRAWERS[name](canvas, frame)
            fractions.append((canvas > 0).mean())
        area[name] = float(np.median(fractions))
    # iasa.pose.synthetic_speaker: face about 3 %, each hand about 1 %, arms and shoulders about 12 %.
    assert 0.02 < area["face"] < 0.045
    assert 0.008 < area["left_hand"] < 0.02 and 0.008 < area["right_hand"] < 0.02
    assert 0.09 < area["arms"] < 0.15


def test_a_hand_whose_detections_drop_out_leaves_that_latent_frame():
    """As with motion blur: the left hand's confidences fall below min_keypoint_confidence in video frames
    5..8, all of latent frame 2, which then has no left-hand token; the other latent frames keep theirs."""
    keypoints = synthetic_speaker(13, (256, 256), seed=0)
    config = SparseAttentionConfig()
    left_hand = config.regions.index("left_hand") + 1
    before = build_sparse_layout(keypoints, config).token_regions
    keypoints.hands_score[5:9, 0] = 0.2  # DWPose hand 0: the person's left
    after = build_sparse_layout(keypoints, config).token_regions
    assert (before == left_hand).any(1).all()
    assert not (after[2] == left_hand).any()
    assert np.array_equal(after[[0, 1, 3]].numpy(), before[[0, 1, 3]].numpy())


@pytest.mark.parametrize(
    "regions, message",
    [(("face", "feet"), "unknown regions"), (("hands", "left_hand"), "either 'hands'"), (("face", "face"), "twice")],
)
def test_bad_region_lists_are_errors(regions, message):
    with pytest.raises(ValueError, match=message):
        region_token_masks(empty_keypoints(1), config(regions=regions), (4, 4))


def test_build_sparse_layout_shapes_and_grid():
    keypoints = synthetic_speaker(9, (96, 160), seed=1)
    layout = build_sparse_layout(keypoints, SparseAttentionConfig(block_size=64))
    assert layout.grid_size == (6, 10)
    assert layout.frame_selection.shape == (3, 3) and layout.frame_selection.dtype == __import__("torch").bool
    assert layout.token_regions.shape == (3, 60) and layout.token_regions.dtype == __import__("torch").int64
    assert layout.block_size == 64 and layout.region_names == ("face", "left_hand", "right_hand", "arms")
    assert set(layout.token_regions.unique().tolist()) <= {0, 1, 2, 3, 4}
    assert (layout.token_regions == 1).any()  # the face is there
    coarse = build_sparse_layout(keypoints, SparseAttentionConfig(), grid_size=(3, 5))
    assert coarse.token_regions.shape == (3, 15)


def test_build_sparse_layout_rejects_other_lengths():
    keypoints = synthetic_speaker(8, (64, 64))
    with pytest.raises(ValueError, match="4n \\+ 1"):
        build_sparse_layout(keypoints, SparseAttentionConfig())
