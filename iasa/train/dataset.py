"""The raw dataset folder (videos + keypoints + prompts) and the training clips cut from its videos.

Raw layout, one name per video:
    videos/<name>.mp4
    keypoints/<name>.npz            WholeBodyKeypoints of every video frame (what infer_motion writes), or
    keypoints/<name>/<frame>.json   one DWPose dict per video frame, sorted by name; DWPose's own pickled
                                    .npy frames are converted to keypoints/<name>.npz first (they could run
                                    code when loaded): python scripts/prepare_dataset.py --convert_keypoints <dir>
    prompts/<name>.txt              optional text prompt
    audio/<name>.wav                optional, not read by training (pose-driven)

A training clip is `num_frames` frames taken every `frame_stride` source frames, resized (aspect kept)
and centre-cropped to height x width; its keypoints get the same crop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iasa.errors import InputError
from iasa.pose.keypoints import POINT_PARTS, KeypointFileError, WholeBodyKeypoints, check_plausible
from iasa.train.config import DataConfig


# Decoded frames may fall this many (or 1%) short of a container's frame count before a video counts as corrupt.
HEADER_COUNT_SLACK = 2


class DatasetError(InputError, ValueError):
    """A dataset folder that does not follow the layout above."""


class SkippedClipsError(DatasetError):
    """data_process cached every clip it could read and skipped these; the message lists them."""


@dataclass(frozen=True)
class ClipSpec:
    """Training clip `index` of video `name`: source frames start, start + stride, ... (num_frames of them)."""

    name: str
    index: int
    start: int

    @property
    def key(self) -> str:
        return f"{self.name}_w{self.index:03d}"


def video_frame_count(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (height, width)) of a video, counted by decoding (container counts can be wrong). A video
    whose decoding stops well before the frame count its header lists is corrupt: DatasetError."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"cannot open video {path}; is it a readable mp4?")
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    count, size = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        size = frame.shape[:2]
        count += 1
    capture.release()
    if listed > 0 and count < listed - max(HEADER_COUNT_SLACK, listed // 100):
        raise DatasetError(f"{path} is corrupt: decoding stopped at frame {count} of the {listed} its header lists")
    return count, size


def read_frames(path: Path, indices: list[int]) -> np.ndarray:
    """The listed frames (sorted, increasing) as RGB uint8 (F, H, W, 3)."""
    capture = cv2.VideoCapture(str(path))
    wanted, frames, position = set(indices), {}, 0
    while position <= indices[-1]:
        ok, frame = capture.read()
        if not ok:
            break
        if position in wanted:
            frames[position] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        position += 1
    capture.release()
    if len(frames) != len(wanted):
        raise DatasetError(f"{path} ended at frame {position}, before frame {indices[-1]} of the clip")
    return np.stack([frames[index] for index in indices])


CONVERT_COMMAND = "python scripts/prepare_dataset.py --convert_keypoints {dataset}"


def dwpose_frame_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix in (".json", ".npy"))


def load_video_keypoints(dataset_dir: Path, name: str, image_size: tuple[int, int]) -> WholeBodyKeypoints:
    """Keypoints of every frame of video `name`, from an .npz or a folder of DWPose dicts (.json; pickled
    .npy frames are refused with the command that converts them)."""
    npz = dataset_dir / "keypoints" / f"{name}.npz"
    folder = dataset_dir / "keypoints" / name
    if npz.is_file():
        return WholeBodyKeypoints.load(npz)
    if folder.is_dir():
        files = dwpose_frame_files(folder)
        if not files:
            raise DatasetError(f"{folder} holds no .json or .npy DWPose frames")
        pickled = [file for file in files if file.suffix == ".npy"]
        if pickled:
            raise DatasetError(
                f"{pickled[0]} is a pickled .npy DWPose frame, which could run code when loaded, so it is not read; "
                f"convert the dataset's keypoint folders once with `{CONVERT_COMMAND.format(dataset=dataset_dir)}`"
            )
        try:
            frames = [json.loads(file.read_text()) for file in files]
        except ValueError as error:
            raise DatasetError(f"{folder}: a frame is not valid JSON ({error})") from error
        return keypoints_from_frames(frames, image_size, folder)
    raise DatasetError(f"no keypoints for video '{name}': expected {npz} or a folder {folder} of DWPose dicts")


def keypoints_from_frames(frames: list, image_size: tuple[int, int], origin: Path) -> WholeBodyKeypoints:
    try:
        keypoints = WholeBodyKeypoints.from_dwpose_dicts(frames, image_size)
        check_plausible(keypoints, str(origin))
    except KeypointFileError as error:
        raise DatasetError(f"{origin}: {error}" if str(origin) not in str(error) else str(error)) from error
    return keypoints


def video_size(path: Path) -> tuple[int, int]:
    """(height, width) from the video's header."""
    capture = cv2.VideoCapture(str(path))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    capture.release()
    if min(size) <= 0:
        raise DatasetError(f"cannot open video {path}; is it a readable mp4?")
    return size


def convert_dwpose_folders(dataset_dir: Path) -> list[Path]:
    """Write keypoints/<name>.npz for every keypoints/<name>/ folder of DWPose frames (.json, or pickled .npy
    read by iasa.pose.dwpose_npy, which builds only arrays and plain containers) that has none yet; the image
    size comes from videos/<name>.mp4. Returns the files written."""
    from iasa.pose.dwpose_npy import read_dwpose_npy

    written = []
    for folder in sorted(path for path in (dataset_dir / "keypoints").glob("*") if path.is_dir()):
        target = folder.with_suffix(".npz")
        files = dwpose_frame_files(folder)
        if target.is_file() or not files:
            continue
        frames = []
        for file in files:
            try:
                frames.append(json.loads(file.read_text()) if file.suffix == ".json" else read_dwpose_npy(file))
            except (KeypointFileError, ValueError) as error:
                raise DatasetError(f"{file}: {error}" if str(file) not in str(error) else str(error)) from error
        keypoints_from_frames(frames, video_size(dataset_dir / "videos" / f"{folder.name}.mp4"), folder).save(target)
        written.append(target)
    return written


def list_videos(dataset_dir: Path) -> list[str]:
    videos = sorted((dataset_dir / "videos").glob("*.mp4"))
    if not videos:
        raise DatasetError(f"no videos in {dataset_dir / 'videos'}; expected <name>.mp4 files (scripts/prepare_dataset.py writes them)")
    return [video.stem for video in videos]


def plan_clips(frame_count: int, name: str, config: DataConfig) -> list[ClipSpec]:
    """Consecutive non-overlapping training clips that fit in the video."""
    span = (config.num_frames - 1) * config.frame_stride + 1
    step = config.num_frames * config.frame_stride
    fitting = (frame_count - span) // step + 1 if frame_count >= span else 0
    count = min(fitting, config.max_clips_per_video)
    return [ClipSpec(name=name, index=index, start=index * step) for index in range(count)]


def clip_frame_indices(clip: ClipSpec, config: DataConfig) -> list[int]:
    return [clip.start + i * config.frame_stride for i in range(config.num_frames)]


@dataclass(frozen=True)
class CropTransform:
    """Resize by `scale` then crop the (height, width) box at (top, left), in source pixels x scale."""

    scale: float
    top: int
    left: int
    height: int
    width: int

    @classmethod
    def centre(cls, source: tuple[int, int], height: int, width: int) -> "CropTransform":
        scale = max(height / source[0], width / source[1])
        resized = (round(source[0] * scale), round(source[1] * scale))
        return cls(scale, (resized[0] - height) // 2, (resized[1] - width) // 2, height, width)

    def frames(self, frames: np.ndarray) -> np.ndarray:
        """(F, H0, W0, 3) -> (F, height, width, 3)."""
        size = (round(frames.shape[2] * self.scale), round(frames.shape[1] * self.scale))
        resized = [cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames]
        return np.stack([frame[self.top : self.top + self.height, self.left : self.left + self.width] for frame in resized])

    def keypoints(self, keypoints: WholeBodyKeypoints) -> WholeBodyKeypoints:
        """Map [0, 1] coordinates of the source image into the crop; points that leave it lose their score."""
        source_h, source_w = keypoints.image_size

        def move(points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = (points[..., 0] * source_w * self.scale - self.left) / self.width
            y = (points[..., 1] * source_h * self.scale - self.top) / self.height
            moved = np.stack([x, y], axis=-1).astype(np.float32)
            inside = ((moved >= 0) & (moved <= 1)).all(axis=-1)
            return np.clip(moved, 0, 1), np.where(inside, scores, 0).astype(np.float32)

        moved = {}
        for part in POINT_PARTS:
            moved[part], moved[f"{part}_score"] = move(getattr(keypoints, part), getattr(keypoints, f"{part}_score"))
        return WholeBodyKeypoints(**moved, image_size=(self.height, self.width))


def select_keypoint_frames(keypoints: WholeBodyKeypoints, indices: list[int]) -> WholeBodyKeypoints:
    return keypoints.select_frames(indices)


def read_prompt(dataset_dir: Path, name: str, default: str) -> str:
    path = dataset_dir / "prompts" / f"{name}.txt"
    return path.read_text().strip() if path.is_file() else default
