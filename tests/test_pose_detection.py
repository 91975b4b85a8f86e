"""DWPose detection through the real path (onnxruntime, letterbox, YOLOX decoding, affine crop, SimCC) with
tiny ONNX models in the official input/output layout (tests/dwpose_models.py) on synthetic images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dwpose_models
from iasa.pose.config import DetectorConfig
from iasa.pose.detection import DetectorFileError, DetectorModelError, DWPoseDetector, NoPersonError
from iasa.pose.wholebody import coco_wholebody_to_dwpose

# The crop normalisation of DWPose's mmpose config (dwpose-l_384x288.py, RGB order).
MEAN_RGB = np.array([123.675, 116.28, 103.53])
STD_RGB = np.array([58.395, 57.12, 57.375])
# A person box in pixels of a 320 x 320 image chosen so that the crop is exactly 2 crop pixels per image
# pixel (1.25 x 153.6 x 3/4 = 144 image pixels over 288 crop pixels) around the integer centre (150, 167):
# crop pixels land on image pixels and half-pixels, so a dot's peak is sampled exactly.
EXACT_BOX = (100.0, 90.2, 200.0, 243.8)
EXACT_IMAGE = (320, 320)
LETTERBOX_RATIO = 2.0  # 640 / 320
DOTS = {0: (120, 130), 1: (175, 200), 2: (140, 240)}  # channel -> dot centre (x, y) in image pixels


def expected_keypoints(dots: dict[int, tuple[int, int]], size: tuple[int, int]):
    """COCO-WholeBody point k at the dot of channel k % 3 (normalised), score = the smaller weight x the
    normalised peak value 255 of that channel, in the DWPose layout."""
    channels = np.arange(133) % 3
    points = np.array([dots[c] for c in channels], np.float64) / [size[1], size[0]]
    scores = np.minimum(dwpose_models.X_WEIGHT, dwpose_models.Y_WEIGHT) * (255 - MEAN_RGB[channels]) / STD_RGB[channels]
    return coco_wholebody_to_dwpose(points.astype(np.float32), scores.astype(np.float32))


def letterbox_box(box: tuple[float, float, float, float]) -> tuple[float, ...]:
    return tuple(v * LETTERBOX_RATIO for v in box)


@pytest.fixture
def pose_file(tmp_path: Path) -> Path:
    return dwpose_models.channel_peak_pose_model(tmp_path / "dw-ll_ucoco_384.onnx")


def detector_for(person_file: Path, pose_file: Path) -> DWPoseDetector:
    return DWPoseDetector.from_config(DetectorConfig(person_model=str(person_file), pose_model=str(pose_file), providers="cpu"))


def assert_pose(keypoints, expected, size, bin_pixels: float, check_scores: bool = True) -> None:
    tolerance = bin_pixels / min(size) + 1e-6
    for part in ("body", "feet", "hands", "face"):
        np.testing.assert_allclose(getattr(keypoints, part)[0], expected[part], atol=tolerance)
        if check_scores:
            np.testing.assert_allclose(getattr(keypoints, f"{part}_score")[0], expected[f"{part}_score"], atol=1e-3)


def test_known_pose_comes_back_exactly_through_the_crop(tmp_path: Path, pose_file: Path) -> None:
    person = dwpose_models.constant_detector(
        tmp_path / "yolox_l.onnx", {0: dwpose_models.encode_row(letterbox_box(EXACT_BOX), 0.9, {0: 1.0})}
    )
    detector = detector_for(person, pose_file)
    boxes, scores = detector.person_boxes(dwpose_models.person_image(EXACT_IMAGE, DOTS))
    np.testing.assert_allclose(boxes, [EXACT_BOX], atol=1e-3)
    np.testing.assert_allclose(scores, [0.9], atol=1e-6)
    keypoints = detector.detect(dwpose_models.person_image(EXACT_IMAGE, DOTS))
    assert keypoints.num_frames == 1 and keypoints.image_size == EXACT_IMAGE
    # Exact sampling: every point on its dot (one SimCC bin is a quarter image pixel here).
    assert_pose(keypoints, expected_keypoints(DOTS, EXACT_IMAGE), EXACT_IMAGE, bin_pixels=0.25)
    # The neck is the midpoint of the shoulders (COCO 5 and 6: the blue and red dots).
    np.testing.assert_allclose(keypoints.body[0, 1], (np.add(DOTS[2], DOTS[0]) / 2) / 320, atol=1e-5)


def test_person_box_follows_the_grey_rectangle_through_the_letterbox(tmp_path: Path, pose_file: Path) -> None:
    detector = detector_for(dwpose_models.rectangle_detector(tmp_path / "yolox_l.onnx"), pose_file)
    size = (240, 400)  # letterboxed by 1.6 into 640 x 384 with 256 padded rows
    rectangle = (150, 40, 260, 200)
    boxes, _ = detector.person_boxes(dwpose_models.person_image(size, dots={}, grey_box=rectangle))
    np.testing.assert_allclose(boxes, [rectangle], atol=1.0)


def test_known_pose_from_the_rectangle_detector(tmp_path: Path, pose_file: Path) -> None:
    detector = detector_for(dwpose_models.rectangle_detector(tmp_path / "yolox_l.onnx"), pose_file)
    size = (300, 260)
    rectangle = (60, 50, 210, 290)
    dots = {0: (90, 100), 1: (170, 160), 2: (120, 260)}
    keypoints = detector.detect(dwpose_models.person_image(size, dots=dots, grey_box=rectangle))
    # The crop spans 1.25 x the box's height at the model's 3:4 aspect: a SimCC bin is half a crop pixel.
    crop_height = 1.25 * max(rectangle[3] - rectangle[1], (rectangle[2] - rectangle[0]) * 4 / 3)
    bin_pixels = 0.5 * crop_height / 384
    assert_pose(keypoints, expected_keypoints(dots, size), size, bin_pixels=bin_pixels + 0.05, check_scores=False)


def test_several_people_take_the_largest_with_a_warning(tmp_path: Path, pose_file: Path) -> None:
    large = letterbox_box(EXACT_BOX)
    rows = {
        0: dwpose_models.encode_row(large, 0.9, {0: 1.0}),
        1: dwpose_models.encode_row(tuple(v + 4 for v in large), 0.85, {0: 1.0}),  # a duplicate: suppressed
        2: dwpose_models.encode_row((10, 10, 60, 80), 0.95, {0: 1.0}),  # a smaller person, better score
        3: dwpose_models.encode_row((0, 0, 600, 600), 0.99, {1: 0.99}),  # a bicycle, not a person
        4: dwpose_models.encode_row((0, 0, 500, 500), 0.5, {0: 0.5}),  # score 0.25: below 0.3
    }
    detector = detector_for(dwpose_models.constant_detector(tmp_path / "yolox_l.onnx", rows), pose_file)
    boxes, scores = detector.person_boxes(dwpose_models.person_image(EXACT_IMAGE, DOTS))
    np.testing.assert_allclose(boxes, [(5, 5, 30, 40), EXACT_BOX], atol=1e-3)
    np.testing.assert_allclose(scores, [0.95, 0.9], atol=1e-6)
    with pytest.warns(UserWarning, match="2 people found in photo.png; using the largest"):
        keypoints = detector.detect(dwpose_models.person_image(EXACT_IMAGE, DOTS), origin="photo.png")
    assert_pose(keypoints, expected_keypoints(DOTS, EXACT_IMAGE), EXACT_IMAGE, bin_pixels=0.25)


def test_no_person_is_an_error_naming_the_image(tmp_path: Path, pose_file: Path) -> None:
    detector = detector_for(dwpose_models.rectangle_detector(tmp_path / "yolox_l.onnx"), pose_file)
    with pytest.raises(NoPersonError, match="no person found in photo.png"):
        detector.detect(dwpose_models.person_image((100, 120), dots={}), origin="photo.png")


def test_frames_without_a_person_get_zero_scores(tmp_path: Path, pose_file: Path) -> None:
    detector = detector_for(dwpose_models.rectangle_detector(tmp_path / "yolox_l.onnx"), pose_file)
    size, rectangle = (300, 260), (60, 50, 210, 290)
    moving = [{0: (90 + 10 * t, 100), 1: (170, 160 + 5 * t), 2: (120, 260)} for t in range(3)]
    frames = [dwpose_models.person_image(size, dots=dots, grey_box=rectangle) for dots in moving]
    frames[1] = dwpose_models.person_image(size, dots={})
    with pytest.warns(UserWarning, match="0 of 3 frames show several people .* 1 show nobody"):
        keypoints = detector.detect_frames(frames, total=3, progress=False)
    assert keypoints.num_frames == 3 and keypoints.image_size == size
    assert not keypoints.body_score[1].any() and not keypoints.hands_score[1].any() and not keypoints.face_score[1].any()
    for t in (0, 2):
        body = expected_keypoints(moving[t], size)["body"]
        np.testing.assert_allclose(keypoints.body[t], body, atol=1.5 / min(size))


def test_missing_model_file_says_what_to_fetch_and_where(tmp_path: Path, pose_file: Path) -> None:
    missing = tmp_path / "checkpoints" / "dwpose" / "yolox_l.onnx"
    with pytest.raises(DetectorFileError) as caught:
        detector_for(missing, pose_file)
    message = str(caught.value)
    for part in (str(missing), "yolox_l.onnx", "dw-ll_ucoco_384.onnx", "https://huggingface.co/yzd-v/DWPose", "detector.person_model"):
        assert part in message
    assert isinstance(caught.value, FileNotFoundError)


def test_a_model_without_simcc_outputs_is_refused(tmp_path: Path) -> None:
    person = dwpose_models.rectangle_detector(tmp_path / "yolox_l.onnx")
    with pytest.raises(DetectorModelError, match="simcc_x and simcc_y"):
        detector_for(person, person)
    not_onnx = tmp_path / "broken.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(DetectorModelError, match="not a loadable ONNX model"):
        detector_for(person, not_onnx)


def test_unknown_or_unavailable_providers_are_config_errors(tmp_path: Path, pose_file: Path) -> None:
    import onnxruntime

    from iasa.config import ConfigError

    person = dwpose_models.rectangle_detector(tmp_path / "yolox_l.onnx")
    config = DetectorConfig(person_model=str(person), pose_model=str(pose_file), providers="tpu")
    with pytest.raises(ConfigError, match="providers must be one of"):
        DWPoseDetector.from_config(config)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        config.providers = "cuda"
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            DWPoseDetector.from_config(config)
