"""Speech + reference image -> talking, gesturing video: the end-to-end path of scripts/generate.py.

reference image -> its pose (DWPose, or a keypoint file); audio -> motion (EMAGE, or procedural without a
checkpoint) -> keypoints aligned to the reference pose -> pose video -> pose-driven Wan2.1-I2V -> mp4 with
the audio muxed in.

Under `torchrun --nproc_per_node N scripts/generate.py ...` the N processes share the DiT by sequence
parallelism (iasa.parallel; N must divide the DiT's heads, 40 for the 14B model). Rank 0 alone reads the
speech, finds the reference pose, computes the motion, keypoints and pose video, and sends the images every
process conditions on (the sparse layouts follow from its keypoints, iasa.video.pipeline); every process
loads the model; rank 0 alone decodes and writes the video.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from iasa.config import ConfigError, check, validate_config
from iasa.errors import InputError
from iasa.parallel.config import ParallelConfig
from iasa.pose.config import DetectorConfig, PoseConfig
from iasa.pose.keypoints import POINT_PARTS, WholeBodyKeypoints
from iasa.pose.style import CHECKPOINT_STYLE, resolve_pose_style
from iasa.video.config import (
    AttentionPatchConfig,
    InferenceSpeedConfig,
    LongVideoConfig,
    SamplerConfig,
    VideoModelConfig,
)
from iasa.video.latent_grid import PATCH_SIZE, TOKEN_STRIDE, VAE_STRIDE

if TYPE_CHECKING:
    from iasa.parallel import ParallelGroup


# What --smoke means for generate.py and stream.py, as overrides applied before the command line's own: a tiny
# random model on the CPU with the sparse attention, no model files.
SMOKE_MODEL_OVERRIDES = [
    "model.model_size=tiny", "model.model_dir=null", "model.unianimate_checkpoint=null", "model.lora_path=null",
    "model.pose_guider_path=null", "model.device=cpu", "model.dtype=float32", "pose.image_height=64",
    "pose.image_width=64", "emage_dir=null", "attention.attention=iasa", "attention.backend=reference",
    "detect_reference_pose=false",
]  # fmt: skip


@dataclass
class GenerationInputs:
    """What generation and streaming both read: the inputs, the pose, the model and its attention."""

    # Speech file (any format ffmpeg reads).
    audio: str = ""
    # Reference image of the person (png/jpg); center-cropped and resized to the pose image size.
    image: str = ""
    # DWPose keypoints (.npz, iasa.pose.keypoints) of the reference image: the motion is aligned to them and
    # their pose image conditions UniAnimate's reference embedding; null = detect them in the image.
    reference_keypoints: Optional[str] = None
    # With reference_keypoints null: find the reference pose in the image with DWPose (`detector`);
    # false = no reference pose, the skeleton keeps the default framing (smoke runs without DWPose files).
    detect_reference_pose: bool = True
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    # EMAGE checkpoint folder (H-Liu1997/emage_audio layout); null = procedural talking motion.
    emage_dir: Optional[str] = None
    pose: PoseConfig = field(default_factory=PoseConfig)
    model: VideoModelConfig = field(default_factory=VideoModelConfig)
    attention: AttentionPatchConfig = field(default_factory=AttentionPatchConfig)

    def validate(self) -> None:
        for key in ("image_height", "image_width"):
            value = getattr(self.pose, key)
            check(value % TOKEN_STRIDE == 0, f"pose.{key}", value,
                  f"must be a multiple of {TOKEN_STRIDE} (VAE {VAE_STRIDE} x patch {PATCH_SIZE})")  # fmt: skip


@dataclass
class InferenceConfig(GenerationInputs):
    # Output mp4.
    out: str = "outputs/video.mp4"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    long_video: LongVideoConfig = field(default_factory=LongVideoConfig)
    speed: InferenceSpeedConfig = field(default_factory=InferenceSpeedConfig)
    # Multi-GPU runs under torchrun (the collective timeout); a plain python run is one process.
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


class StageTimer:
    """Wall time of named stages, printed as a summary table; `echo` False: stages start silently (the
    processes other than rank 0 of a multi-GPU run)."""

    def __init__(self, echo: bool = True) -> None:
        self.seconds: dict[str, float] = {}
        self.echo = echo

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.echo:
            print(f"[iasa] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def summary(self) -> str:
        width = max(map(len, self.seconds), default=0)
        lines = [f"  {name:<{width}}  {seconds:8.2f} s" for name, seconds in self.seconds.items()]
        lines.append(f"  {'total':<{width}}  {sum(self.seconds.values()):8.2f} s")
        return "stage timings:\n" + "\n".join(lines)


class ImageFileError(InputError, ValueError):
    """A reference image that is missing or not an image."""


def center_crop_box(source: tuple[int, int], target: tuple[int, int]) -> tuple[float, float, float, float]:
    """(top, left, height, width) of the largest centred crop of `source` (h, w) with `target`'s aspect."""
    source_height, source_width = source
    target_height, target_width = target
    if source_width * target_height > target_width * source_height:  # source wider: crop the sides
        width = source_height * target_width / target_height
        return 0.0, (source_width - width) / 2, float(source_height), width
    height = source_width * target_height / target_width
    return (source_height - height) / 2, 0.0, height, float(source_width)


# Transparent pixels of a reference image become this colour (a cut-out person on a white background).
ALPHA_BACKGROUND = 255.0


def rgb_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    """A decoded image (H, W) or (H, W, C) of 8 or 16 bits (or 1-bit) -> (H, W, 3) uint8: 16-bit values scaled
    (65535 -> 255), grey repeated to RGB, an alpha channel composited over ALPHA_BACKGROUND."""
    if image.dtype == np.bool_:
        image = image.astype(np.float32) * 255
    elif image.dtype == np.uint16:
        image = image.astype(np.float32) / 257
    elif image.dtype != np.uint8:
        raise ImageFileError(f"reference image {path} has {image.dtype} pixels; save it as an 8- or 16-bit png or a jpg")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ImageFileError(f"reference image {path} has shape {image.shape}, not grey, grey + alpha, RGB or RGBA")
    channels = image.shape[-1]
    colour = image[..., : 3 if channels >= 3 else 1].astype(np.float32)
    if channels in (2, 4):
        opacity = image[..., -1:].astype(np.float32) / 255
        colour = colour * opacity + ALPHA_BACKGROUND * (1 - opacity)
    return np.broadcast_to(np.round(colour).astype(np.uint8), (*image.shape[:2], 3)).copy()


def load_reference_image(path: str | Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The image center-cropped to size's aspect and resized to size (h, w), and the original image (both
    (h, w, 3) uint8 RGB)."""
    import cv2
    import imageio.v2 as imageio

    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"reference image {path} does not exist; pass image=<png or jpg of the person>")
    try:
        image = np.asarray(imageio.imread(path))
    except Exception as error:  # imageio raises many types for a file that is not an image
        raise ImageFileError(f"reference image {path} could not be read as an image ({type(error).__name__}); pass a png or jpg") from error
    image = rgb_uint8(image, path)
    top, left, height, width = (int(round(v)) for v in center_crop_box(image.shape[:2], size))
    crop = image[top : top + height, left : left + width]
    return cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA), image


def crop_keypoints(keypoints: WholeBodyKeypoints, source: tuple[int, int], size: tuple[int, int]) -> WholeBodyKeypoints:
    """Keypoints of an image of `source` size mapped through center_crop_box onto an image of `size`;
    points that fall outside get score 0."""
    top, left, height, width = center_crop_box(source, size)
    scale = np.array([source[1] / width, source[0] / height], np.float32)
    offset = np.array([left / width, top / height], np.float32)
    mapped = {}
    for name in POINT_PARTS:
        points = getattr(keypoints, name) * scale - offset
        inside = ((points >= 0) & (points <= 1)).all(axis=-1)
        mapped[name] = np.clip(points, 0, 1).astype(np.float32)
        mapped[f"{name}_score"] = np.where(inside, getattr(keypoints, f"{name}_score"), 0).astype(np.float32)
    return WholeBodyKeypoints(**mapped, image_size=size)


def reference_image_and_pose(config: InferenceConfig, size: tuple[int, int]) -> tuple[np.ndarray, Optional[WholeBodyKeypoints]]:
    """The reference image cropped and resized to size (h, w) and its pose in that crop: from
    config.reference_keypoints (keypoints of the original image), else detected in the original image with
    DWPose, else (detect_reference_pose false) None."""
    image, original = load_reference_image(config.image, size)
    if config.reference_keypoints is not None:
        keypoints = WholeBodyKeypoints.load(config.reference_keypoints)
    elif config.detect_reference_pose:
        from iasa.pose.detection import DWPoseDetector

        detector = DWPoseDetector.from_config(config.detector)
        keypoints = detector.detect(original, origin=f"reference image {config.image}")
    else:
        return image, None
    return image, crop_keypoints(keypoints, original.shape[:2], size)


def inference_pose_style(requested: str, model: VideoModelConfig) -> str:
    """The pose style to draw for pose.style ``requested``: the style this project's LoRA file records, else
    UniAnimate's checkpoint's (iasa.pose.style.resolve_pose_style; an explicit other style warns)."""
    from iasa.video.lora import lora_pose_style

    if model.lora_path is not None:
        recorded = lora_pose_style(model.lora_path)
        if recorded is None:
            warnings.warn(
                f"model.lora_path {model.lora_path} records no pose style (written before styles were recorded); "
                "set pose.style to the style it was trained on",
                stacklevel=2,
            )
        return resolve_pose_style(requested, recorded, f"model.lora_path {model.lora_path}")
    if model.unianimate_checkpoint is not None:
        return resolve_pose_style(requested, CHECKPOINT_STYLE, f"model.unianimate_checkpoint {model.unianimate_checkpoint}")
    return resolve_pose_style(requested, None, "the randomly initialised pose guider")


def check_output_path(path: str | Path) -> None:
    """The output video can be written: not a folder, inside a folder that exists or can be made, writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"out={path} is a folder; pass the path of the video to write, e.g. out={path / 'video.mp4'}")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"out={path}: {folder} is a file, so the folder for the video cannot be made")
    if not os.access(folder, os.W_OK):
        raise InputError(f"out={path}: the folder {folder} is not writable")


def check_model_files(config: InferenceConfig) -> None:
    """Every model file the config names exists (their contents are checked as they load)."""
    from iasa.motion.emage_config import read_emage_config
    from iasa.pose.detection import check_detector_files
    from iasa.video.config import architecture
    from iasa.video.model_files import ModelFilesError, locate_model_files

    if config.reference_keypoints is None and config.detect_reference_pose:
        check_detector_files(config.detector)
    if config.model.model_dir is not None:
        locate_model_files(config.model.model_dir, architecture(config.model.model_size))
    for key in ("unianimate_checkpoint", "lora_path", "pose_guider_path"):
        path = getattr(config.model, key)
        if path is not None and not Path(path).is_file():
            raise ModelFilesError(f"model.{key}={path} does not exist; fix the path or set model.{key}=null")
    if config.emage_dir is not None:
        read_emage_config(config.emage_dir)


def run_inference(config: InferenceConfig, progress: bool = True) -> StageTimer | None:
    """Write config.out; returns the stage timings (None on the ranks other than 0 of a torchrun launch).
    Every input is read and every path checked before the video model loads, so a bad file fails in seconds,
    not after minutes of loading and generation."""
    from iasa.parallel import ParallelLaunchError, check_head_split, parallel_group
    from iasa.video.assembly import resolve_device
    from iasa.video.config import architecture

    validate_config(config)  # load_config did already; here for configs built in code
    if not config.audio or not config.image:
        raise ConfigError("pass audio=<speech file> and image=<reference image> (and out=<video.mp4>)")
    check_output_path(config.out)
    check_model_files(config)
    device = resolve_device(config.model.device)
    with parallel_group(config.parallel, device.type) as parallel:
        check_head_split(architecture(config.model.model_size).num_heads, parallel.world_size)
        if parallel.world_size > 1 and device.type == "cuda" and device.index is not None:
            raise ParallelLaunchError(
                f"model.device={config.model.device} would put all {parallel.world_size} processes on one GPU: "
                "under torchrun pass model.device=cuda (or auto), each process takes the GPU of its LOCAL_RANK"
            )
        return _generate(config, parallel, progress)


def _generate(config: InferenceConfig, parallel: ParallelGroup, progress: bool) -> StageTimer | None:
    """run_inference in one process of `parallel`: rank 0 prepares the inputs and writes."""
    import torch

    from iasa.parallel import broadcast_tensors
    from iasa.motion.audio import load_audio
    from iasa.pose import draw_pose_frames, motion_to_keypoints
    from iasa.video.pipeline import VideoGenerator
    from iasa.video.video_io import write_video

    main = parallel.is_main
    size = (config.pose.image_height, config.pose.image_width)
    timer = StageTimer(echo=main)
    if main:
        waveform = load_audio(config.audio)
        pose_style = inference_pose_style(config.pose.style, config.model)  # reads the LoRA file's record
        # First, so that a missing DWPose file or a photo without a person fails before the video model loads.
        with timer.stage("reference pose"):
            image, reference = reference_image_and_pose(config, size)
    with timer.stage("load video model"):
        generator = VideoGenerator.from_config(config.model, config.attention, config.long_video, config.speed, parallel)
    keypoints = None
    if main:
        with timer.stage("audio -> motion"):
            if config.emage_dir is not None:
                from iasa.motion.emage_inference import EmageMotionGenerator

                device = generator.components.device
                motion = EmageMotionGenerator.from_pretrained(config.emage_dir, device=device)(waveform)
            else:
                from iasa.motion.procedural import ProceduralMotionGenerator

                motion = ProceduralMotionGenerator()(waveform)
        with timer.stage("motion -> keypoints"):
            keypoints = motion_to_keypoints(motion, config.pose, reference=reference)
        with timer.stage("pose video"):
            pose_video = draw_pose_frames(keypoints, pose_style)
            reference_pose = pose_video[0]
            if reference is not None:
                reference_pose = draw_pose_frames(reference.slice_frames(0, 1), pose_style)[0]
        images = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in
                  (("image", image), ("pose_video", pose_video), ("reference_pose", reference_pose))}  # fmt: skip
    images = broadcast_tensors(images if main else None, parallel)
    image, pose_video, reference_pose = (images[name].numpy() for name in ("image", "pose_video", "reference_pose"))
    with timer.stage("video generation"):
        video = generator.generate(image, pose_video, reference_pose, keypoints, config.sampler, progress=progress)
    if not main:
        return None
    with timer.stage("write video"):
        write_video(config.out, video, fps=motion.fps, audio=config.audio)
    return timer
