"""Whole-body keypoints of the person in a photo or a video: DWPose (YOLOX-L person boxes, then the
dw-ll_ucoco_384 top-down model on the largest person) run with onnxruntime from local files.

The two files are yzd-v/DWPose's ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``; the steps follow DWPose's
own annotator (ControlNet-v1-1-nightly/annotator/dwpose) and rtmlib, which wrap the same files:

1. Person boxes. The image is letterboxed into the detector's 640 x 640 input (scaled by one ratio into
   the top-left corner, the rest filled with 114), fed as float 0..255 without normalisation, channels
   BGR (YOLOX is trained on images read by OpenCV). Its output (1, 8400, 85) holds one row per cell of
   the stride 8, 16 and 32 grids: centre offsets in cells, log width/height in cells, objectness and 80
   class probabilities. A row is a person when objectness x class 0 exceeds the threshold; overlapping
   boxes are merged by non-maximum suppression.
2. Keypoints of one box. The box is grown by 1.25, widened to the model's 3:4 aspect and cut out by an
   affine warp to 288 x 384 (w x h); the crop is normalised with ImageNet's RGB mean and std (mmpose's
   PoseDataPreprocessor with bgr_to_rgb=True). The model gives SimCC logits, simcc_x (1, 133, 576) and
   simcc_y (1, 133, 768): two bins per crop pixel. A point sits at the argmax bins / 2, mapped back
   through the warp; its score is the smaller of the two maxima.
3. The 133 COCO-WholeBody points become the DWPose layout (iasa.pose.wholebody), normalised by the
   image width and height.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
from tqdm import tqdm

from iasa.config import ConfigError
from iasa.errors import InputError, MissingFileError
from iasa.pose.config import DetectorConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.wholebody import coco_wholebody_to_dwpose

DWPOSE_FILES_URL = "https://huggingface.co/yzd-v/DWPose"
COCO_WHOLEBODY_POINTS = 133
# YOLOX: grid strides of its three heads, the letterbox fill value, the row layout and COCO's person class.
YOLOX_STRIDES = (8, 16, 32)
LETTERBOX_FILL = 114
YOLOX_BOX_VALUES = 4  # centre x, centre y, log width, log height
PERSON_CLASS = 0
# Top-down pose model: box growth around the person, crop normalisation (RGB) and SimCC bins per pixel.
BOX_PADDING = 1.25
POSE_MEAN_RGB = np.array([123.675, 116.28, 103.53], np.float32)
POSE_STD_RGB = np.array([58.395, 57.12, 57.375], np.float32)
SIMCC_SPLIT_RATIO = 2.0
PROVIDERS = ("auto", "cuda", "cpu")


class DetectorFileError(MissingFileError):
    """A DWPose model file that is not where the config says."""


class DetectorModelError(InputError, ValueError):
    """A model file that onnxruntime cannot load or whose inputs and outputs are not DWPose's."""


class NoPersonError(InputError, ValueError):
    """No person was found in an image that needs one."""


def check_detector_files(config: DetectorConfig, setting: str = "detector.") -> None:
    """Raise DetectorFileError naming the first missing model file, what to fetch and the setting
    (``setting`` + field name, e.g. ``detector.person_model``) that points elsewhere."""
    for field in ("person_model", "pose_model"):
        path = Path(getattr(config, field))
        if not path.is_file():
            raise DetectorFileError(
                f"DWPose model file {path} not found: fetch yolox_l.onnx and dw-ll_ucoco_384.onnx from "
                f"{DWPOSE_FILES_URL} and put them at {config.person_model} and {config.pose_model} "
                f"(or set {setting}{field}=<path>)"
            )


def execution_providers(choice: str) -> list[str]:
    """onnxruntime providers for ``choice``: auto = CUDA when this onnxruntime has it, then CPU."""
    import onnxruntime

    if choice not in PROVIDERS:
        raise ConfigError(f"detector providers must be one of {PROVIDERS}, got {choice!r}")
    available = onnxruntime.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if choice == "cuda" and not has_cuda:
        raise ConfigError(
            "detector providers=cuda, but this onnxruntime has no CUDA provider; "
            "pip install onnxruntime-gpu, or set providers to auto or cpu"
        )
    if choice == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _open_session(path: Path, providers: list[str]) -> Any:
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
        raise DetectorModelError(f"{path} is not a loadable ONNX model ({type(error).__name__}: {error}); fetch it again from {DWPOSE_FILES_URL}") from error


def _image_input(session: Any, path: Path) -> tuple[str, tuple[int, int]]:
    """Name and (height, width) of the single NCHW image input of a model."""
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(shape) != 4 or shape[1] != 3 or not all(isinstance(side, int) for side in shape[2:]):
        raise DetectorModelError(
            f"{path}: expected one image input of shape (1, 3, height, width) with a fixed size, "
            f"got {[(i.name, i.shape) for i in inputs]}; is it the file from {DWPOSE_FILES_URL}?"
        )
    return inputs[0].name, (int(shape[2]), int(shape[3]))


def anchor_grid(input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) cell (x, y) and (N,) stride of every YOLOX output row, strides 8, 16, 32, each grid row-major."""
    cells, strides = [], []
    for stride in YOLOX_STRIDES:
        ys, xs = np.mgrid[0 : input_size[0] // stride, 0 : input_size[1] // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
        strides.append(np.full(xs.size, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> the (size[0], size[1], 3) uint8 detector input and the resize ratio: the image
    scaled by one ratio into the top-left corner, the rest LETTERBOX_FILL."""
    height, width = image.shape[:2]
    ratio = min(size[0] / height, size[1] / width)
    resized_height, resized_width = max(1, int(height * ratio)), max(1, int(width * ratio))
    canvas = np.full((*size, 3), LETTERBOX_FILL, np.uint8)
    canvas[:resized_height, :resized_width] = cv2.resize(image, (resized_width, resized_height), interpolation=cv2.INTER_LINEAR)
    return canvas, ratio


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the (N, 4) xyxy boxes kept, best score first: each box drops the lower-scoring boxes
    that overlap it by more than ``iou_threshold``."""
    order = np.argsort(-scores, kind="stable")
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=-1)
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        corner_min = np.maximum(boxes[best, :2], boxes[rest, :2])
        corner_max = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.prod(np.clip(corner_max - corner_min, 0, None), axis=-1)
        iou = overlap / np.maximum(areas[best] + areas[rest] - overlap, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def decode_person_boxes(
    rows: np.ndarray, input_size: tuple[int, int], ratio: float, score_threshold: float, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX output rows (N, 5 + classes) of a letterboxed image -> person boxes (P, 4) xyxy in pixels of
    the original image and their scores (P,), best first."""
    cells, strides = anchor_grid(input_size)
    if rows.ndim != 2 or len(rows) != len(cells) or rows.shape[1] <= YOLOX_BOX_VALUES + 1 + PERSON_CLASS:
        raise DetectorModelError(
            f"person detector output has shape {rows.shape}, expected ({len(cells)}, 85): the rows of YOLOX's "
            f"stride 8/16/32 grids for a {input_size[1]}x{input_size[0]} input"
        )
    scores = rows[:, YOLOX_BOX_VALUES] * rows[:, YOLOX_BOX_VALUES + 1 + PERSON_CLASS]
    person = scores > score_threshold
    rows, cells, strides, scores = rows[person], cells[person], strides[person], scores[person]
    centres = (rows[:, :2] + cells) * strides[:, None]
    sizes = np.exp(rows[:, 2:4]) * strides[:, None]
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1) / ratio
    kept = non_maximum_suppression(boxes, scores, iou_threshold)
    return boxes[kept], scores[kept]


@dataclass(frozen=True)
class PoseCrop:
    """The affine warp of a person box onto the pose model's input: crop = scale * (image - centre) + half
    the input size, with one scale on both axes (no rotation)."""

    centre: np.ndarray  # (2,) x, y in image pixels
    pixels_per_image_pixel: float
    input_size: tuple[int, int]  # (height, width)

    @classmethod
    def around(cls, box: np.ndarray, input_size: tuple[int, int]) -> "PoseCrop":
        """The crop of ``box`` (4,) xyxy grown by BOX_PADDING and widened to the input's aspect."""
        centre = (box[:2] + box[2:]) / 2
        width, height = (box[2:] - box[:2]) * BOX_PADDING
        aspect = input_size[1] / input_size[0]
        width = max(width, height * aspect, 1e-6)
        return cls(centre=centre.astype(np.float64), pixels_per_image_pixel=input_size[1] / width, input_size=input_size)

    def matrix(self) -> np.ndarray:
        """(2, 3) image -> crop affine matrix for cv2.warpAffine."""
        half = np.array(self.input_size[::-1], np.float64) / 2
        shift = half - self.pixels_per_image_pixel * self.centre
        return np.array([[self.pixels_per_image_pixel, 0.0, shift[0]], [0.0, self.pixels_per_image_pixel, shift[1]]])

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixel coordinates -> image pixel coordinates."""
        half = np.array(self.input_size[::-1], np.float64) / 2
        return (points - half) / self.pixels_per_image_pixel + self.centre


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimCC logits (K, Wx), (K, Wy) -> (K, 2) points in input pixels and (K,) scores, the smaller of
    the x and y maxima."""
    points = np.stack([simcc_x.argmax(axis=-1), simcc_y.argmax(axis=-1)], axis=-1) / SIMCC_SPLIT_RATIO
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    return points, scores


def to_dwpose_keypoints(points: np.ndarray, scores: np.ndarray, image_size: tuple[int, int]) -> WholeBodyKeypoints:
    """COCO-WholeBody points (F, 133, 2) in pixels and scores (F, 133) -> DWPose keypoints normalised by
    ``image_size`` (height, width). Scores are clipped to [0, 1]; points outside the image get score 0."""
    height, width = image_size
    normalised = points / np.array([width, height], np.float64)
    inside = ((normalised >= 0) & (normalised <= 1)).all(axis=-1)
    scores = np.where(inside, np.clip(scores, 0.0, 1.0), 0.0).astype(np.float32)
    parts = coco_wholebody_to_dwpose(np.clip(normalised, 0.0, 1.0).astype(np.float32), scores)
    return WholeBodyKeypoints(**parts, image_size=(int(height), int(width)))


def largest(boxes: np.ndarray) -> np.ndarray:
    """The box (4,) of largest area among (P, 4) xyxy boxes."""
    return boxes[np.argmax(np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1))]


class DWPoseDetector:
    """Person boxes and COCO-WholeBody keypoints of RGB uint8 images with DWPose's two ONNX models."""

    def __init__(self, person_session: Any, pose_session: Any, config: DetectorConfig) -> None:
        self.config = config
        self.person_session, self.pose_session = person_session, pose_session
        self.person_input, self.person_input_size = _image_input(person_session, Path(config.person_model))
        self.pose_input, self.pose_input_size = _image_input(pose_session, Path(config.pose_model))
        outputs = [output.name for output in pose_session.get_outputs()]
        if not {"simcc_x", "simcc_y"} <= set(outputs):
            raise DetectorModelError(
                f"{config.pose_model}: expected outputs simcc_x and simcc_y (DWPose's SimCC head), got {outputs}"
            )

    @classmethod
    def from_config(cls, config: DetectorConfig, setting: str = "detector.") -> "DWPoseDetector":
        """Open both model files (missing ones are a DetectorFileError naming ``setting`` + the field)."""
        check_detector_files(config, setting)
        providers = execution_providers(config.providers)
        return cls(
            _open_session(Path(config.person_model), providers), _open_session(Path(config.pose_model), providers), config
        )

    def person_boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (P, 4) xyxy in pixels of the (H, W, 3) RGB uint8 ``image`` and their scores, best first."""
        canvas, ratio = letterbox(np.ascontiguousarray(image[..., ::-1]), self.person_input_size)  # BGR for YOLOX
        tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
        output = np.asarray(self.person_session.run(None, {self.person_input: tensor})[0])
        if output.ndim != 3 or output.shape[0] != 1:
            raise DetectorModelError(f"{self.config.person_model}: output shape {output.shape}, expected (1, rows, 85)")
        return decode_person_boxes(
            output[0], self.person_input_size, ratio,
            self.config.person_score_threshold, self.config.nms_iou_threshold,
        )  # fmt: skip

    def wholebody_points(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 133 COCO-WholeBody points (133, 2) in image pixels and their scores (133,) of the person in
        ``box`` (4,) xyxy of the (H, W, 3) RGB uint8 ``image``."""
        crop = PoseCrop.around(np.asarray(box, np.float64), self.pose_input_size)
        height, width = self.pose_input_size
        pixels = cv2.warpAffine(image, crop.matrix(), (width, height), flags=cv2.INTER_LINEAR)
        normalised = (pixels.astype(np.float32) - POSE_MEAN_RGB) / POSE_STD_RGB
        tensor = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)
        simcc_x, simcc_y = self.pose_session.run(["simcc_x", "simcc_y"], {self.pose_input: tensor})
        points, scores = decode_simcc(np.asarray(simcc_x)[0], np.asarray(simcc_y)[0])
        if len(points) != COCO_WHOLEBODY_POINTS:
            raise DetectorModelError(f"{self.config.pose_model} gives {len(points)} points, expected the 133 of COCO-WholeBody")
        return crop.to_image(points), scores

    def detect(self, image: np.ndarray, origin: str = "the image") -> WholeBodyKeypoints:
        """DWPose keypoints (1 frame) of the largest person in the (H, W, 3) RGB uint8 ``image``. No person is
        a NoPersonError naming ``origin``; several people give a warning."""
        image = _rgb_uint8(image, origin)
        boxes, _ = self.person_boxes(image)
        if len(boxes) == 0:
            raise NoPersonError(
                f"no person found in {origin} (DWPose's person detector, score > {self.config.person_score_threshold}); "
                "use a photo in which the person is clearly visible"
            )
        if len(boxes) > 1:
            warnings.warn(f"{len(boxes)} people found in {origin}; using the largest", stacklevel=2)
        points, scores = self.wholebody_points(image, largest(boxes))
        return to_dwpose_keypoints(points[None], scores[None], image.shape[:2])

    def detect_frames(
        self, frames: Iterable[np.ndarray], total: int | None = None, progress: bool = True, origin: str = "the video"
    ) -> WholeBodyKeypoints:
        """DWPose keypoints of the largest person in every RGB uint8 frame (all of one size). A frame without
        a person gets score 0 everywhere; frames with several people or none are counted in one warning."""
        points, scores, size = [], [], None
        crowded, empty = 0, 0
        for frame in tqdm(frames, total=total, desc="DWPose keypoints", unit="frame", leave=False, disable=not progress):
            frame = _rgb_uint8(frame, origin)
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise InputError(f"{origin}: frame {len(points)} is {frame.shape[:2]}, the first frame {size}")
            boxes, _ = self.person_boxes(frame)
            crowded += len(boxes) > 1
            if len(boxes) == 0:
                empty += 1
                points.append(np.zeros((COCO_WHOLEBODY_POINTS, 2)))
                scores.append(np.zeros(COCO_WHOLEBODY_POINTS))
                continue
            frame_points, frame_scores = self.wholebody_points(frame, largest(boxes))
            points.append(frame_points)
            scores.append(frame_scores)
        if size is None:
            raise InputError(f"{origin} has no frames")
        if crowded or empty:
            warnings.warn(
                f"{origin}: {crowded} of {len(points)} frames show several people (the largest is used), "
                f"{empty} show nobody (their keypoints have score 0)",
                stacklevel=2,
            )
        return to_dwpose_keypoints(np.stack(points), np.stack(scores), size)


def _rgb_uint8(image: np.ndarray, origin: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{origin}: expected an (H, W, 3) RGB uint8 image, got {image.dtype} {image.shape}")
    return image
