"""End to end on a tiny random model: speech + image -> mp4 with the right frame count and the audio; the
reference pose detected in the image by tiny DWPose stand-ins, or read from a keypoint file."""

from __future__ import annotations

import warnings
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from scipy.io import wavfile

import dwpose_models
from iasa.motion.procedural import ProceduralMotionGenerator
from iasa.pose import motion_to_keypoints
from iasa.pose.config import DetectorConfig, PoseConfig
from iasa.pose.detection import DetectorFileError, NoPersonError
from iasa.video.config import AttentionPatchConfig, LongVideoConfig, SamplerConfig, VideoModelConfig
from iasa.video.inference import InferenceConfig, center_crop_box, crop_keypoints, reference_image_and_pose, run_inference
from iasa.video.video_io import probe_video, write_video

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000


def write_speech(path: Path, seconds: float) -> np.ndarray:
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    waveform = (0.3 * np.sin(2 * np.pi * 180 * time) * (1 + np.sin(2 * np.pi * 3 * time))).astype(np.float32)
    wavfile.write(path, SAMPLE_RATE, waveform)
    return waveform


# A 100 x 80 photo (not the video size: the image and its keypoints are cropped and resized) of the
# person the tiny DWPose stand-ins see: a grey box with one bright dot per colour channel.
PHOTO_SIZE = (100, 80)
DOTS = {0: (40, 30), 1: (30, 55), 2: (50, 70)}


def write_photo(folder: Path) -> tuple[Path, DetectorConfig]:
    """The photo and a DetectorConfig of tiny DWPose stand-ins (tests/dwpose_models.py) in ``folder``."""
    imageio.imwrite(folder / "person.png", dwpose_models.person_image(PHOTO_SIZE, DOTS, grey_box=(15, 15, 65, 95)))
    detector = DetectorConfig(
        person_model=str(dwpose_models.rectangle_detector(folder / "dwpose" / "yolox_l.onnx")),
        pose_model=str(dwpose_models.channel_peak_pose_model(folder / "dwpose" / "dw-ll_ucoco_384.onnx")),
        providers="cpu",
    )
    return folder / "person.png", detector


def test_generate_cli_writes_video_with_audio_from_a_photo_alone(tmp_path, run_script, capsys, monkeypatch):
    waveform = write_speech(tmp_path / "speech.wav", seconds=0.6)
    expected_frames = ProceduralMotionGenerator()(waveform).num_frames
    photo, detector = write_photo(tmp_path)
    out = tmp_path / "out" / "video.mp4"
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_script(
            "generate.py", "--config", ROOT / "config" / "infer_iasa.yaml", "--smoke", "--no-progress",
            f"audio={tmp_path / 'speech.wav'}", f"image={photo}", f"out={out}", "detect_reference_pose=true",
            f"detector.person_model={detector.person_model}", f"detector.pose_model={detector.pose_model}",
            "detector.providers=cpu", "attention.backend=reference",
        )  # fmt: skip
    printed = capsys.readouterr()
    assert "stage timings" in printed.out and "video generation" in printed.out
    assert "reference pose" in printed.out and "default framing" not in printed.err
    assert not [warning for warning in caught if "default framing" in str(warning.message)]
    info = probe_video(out)
    assert info.frames == expected_frames == 18
    assert (info.height, info.width) == (64, 64) and info.fps == 30 and info.has_audio
    assert sorted(p.name for p in out.parent.iterdir()) == ["video.mp4"]  # no temporary files left


def test_reference_pose_is_detected_in_the_photo_and_cropped_like_it(tmp_path):
    photo, detector = write_photo(tmp_path)
    config = InferenceConfig(image=str(photo), detector=detector)
    image, reference = reference_image_and_pose(config, (64, 64))
    assert image.shape == (64, 64, 3) and reference.image_size == (64, 64) and reference.num_frames == 1
    # The 100 x 80 photo is cropped to its centre 80 x 80 (rows 10..90): pixel (x, y) -> (x, y - 10) / 80.
    # The nose (COCO point 0) is on the red dot, the right wrist (COCO 10) on the green one.
    for body_point, channel in ((0, 0), (4, 1)):
        x, y = DOTS[channel]
        np.testing.assert_allclose(reference.body[0, body_point], [x / 80, (y - 10) / 80], atol=1.0 / 80)
        assert reference.body_score[0, body_point] > 0.3  # above the alignment and drawing threshold


def test_reference_keypoints_override_detection(tmp_path):
    photo, _ = write_photo(tmp_path)
    keypoints = motion_to_keypoints(
        ProceduralMotionGenerator()(np.zeros(SAMPLE_RATE // 10, np.float32)), PoseConfig(image_height=100, image_width=80)
    ).slice_frames(0, 1)
    keypoints.save(tmp_path / "person_keypoints.npz")
    absent = DetectorConfig(person_model=str(tmp_path / "none.onnx"), pose_model=str(tmp_path / "none.onnx"))
    config = InferenceConfig(image=str(photo), reference_keypoints=str(tmp_path / "person_keypoints.npz"), detector=absent)
    _, reference = reference_image_and_pose(config, (64, 64))
    np.testing.assert_allclose(reference.body, crop_keypoints(keypoints, PHOTO_SIZE, (64, 64)).body)


def test_missing_dwpose_file_fails_before_the_video_model_loads(tmp_path, monkeypatch):
    from iasa.video.pipeline import VideoGenerator

    def never(*args, **kwargs):
        raise AssertionError("the video model was loaded before the DWPose files were checked")

    monkeypatch.setattr(VideoGenerator, "from_config", never)
    write_speech(tmp_path / "speech.wav", seconds=0.2)
    photo, detector = write_photo(tmp_path)
    missing = tmp_path / "checkpoints" / "dwpose" / "yolox_l.onnx"
    config = InferenceConfig(
        audio=str(tmp_path / "speech.wav"), image=str(photo), detector=DetectorConfig(person_model=str(missing))
    )
    with pytest.raises(DetectorFileError, match="detector.person_model"):
        run_inference(config, progress=False)


def test_photo_without_a_person_is_an_error_naming_it(tmp_path):
    _, detector = write_photo(tmp_path)
    empty = tmp_path / "empty.png"
    imageio.imwrite(empty, dwpose_models.person_image(PHOTO_SIZE, {}))
    with pytest.raises(NoPersonError, match=f"no person found in reference image {empty}"):
        reference_image_and_pose(InferenceConfig(image=str(empty), detector=detector), (64, 64))


def test_long_clip_is_generated_in_windows():
    from iasa.video.pipeline import VideoGenerator

    generator = VideoGenerator.from_config(
        VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu"),
        AttentionPatchConfig(attention="dense"),
        LongVideoConfig(window_latent_frames=5, overlap_latent_frames=2),
    )
    rng = np.random.default_rng(1)
    frames = 23  # pads to 25 = 7 latent frames -> windows [0, 5) and [2, 7)
    pose = rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)
    video = generator.generate(pose[0], pose, pose[0], None, SamplerConfig(num_steps=1, cfg_scale=1.0), progress=False)
    assert video.shape == (frames, 32, 32, 3) and video.dtype == np.uint8


def test_crop_box_and_keypoints_follow_the_same_crop():
    assert center_crop_box((100, 80), (64, 64)) == (10.0, 0.0, 80.0, 80.0)
    assert center_crop_box((60, 120), (32, 64)) == (0.0, 0.0, 60.0, 120.0)
    reference = motion_to_keypoints(ProceduralMotionGenerator()(np.zeros(SAMPLE_RATE // 10, np.float32)), PoseConfig(image_height=100, image_width=80))
    cropped = crop_keypoints(reference, (100, 80), (64, 64))
    inside = cropped.body_score[0] > 0
    # A point at pixel (x, y) of the 100 x 80 image sits at (x, y - 10) of the 80 x 80 crop.
    expected = (reference.body[0] * [80, 100] - [0, 10]) / 80
    np.testing.assert_allclose(cropped.body[0][inside], expected[inside], atol=1e-5)
    assert cropped.image_size == (64, 64)


def test_write_video_rejects_bad_frames_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "bad.mp4", np.zeros((3, 16, 16, 3), np.float32), fps=30)
    assert list(tmp_path.iterdir()) == []
