"""Whole-body 2D keypoints of a clip in the DWPose layout, and their file format.

The DWPose layout (what UniAnimate's pose guider was trained on): 18 OpenPose body points with the neck
at the shoulder midpoint, 21 points per hand (index 0 = the person's left hand, 1 = right hand, as
COCO-WholeBody orders them) and 68 face points. Coordinates are normalised to [0, 1] by the image width
and height. Every point carries a confidence score in [0, 1]; a missing point has score 0.

On disk a clip is one .npz holding the stacked arrays (keys below) plus ``image_size`` (height, width).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iasa.errors import InputError
from iasa.atomic_io import atomic_output

BODY_POINTS = 18
HAND_POINTS = 21
FACE_POINTS = 68

# OpenPose-18 body order used by DWPose.
BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

_EXPECTED_SHAPES = {
    "body": (BODY_POINTS, 2),
    "body_score": (BODY_POINTS,),
    "hands": (2, HAND_POINTS, 2),
    "hands_score": (2, HAND_POINTS),
    "face": (FACE_POINTS, 2),
    "face_score": (FACE_POINTS,),
}


# A confident point farther than this outside [0, 1] means pixel coordinates were saved as normalised ones.
PIXEL_COORDINATE_LIMIT = 2.0


class KeypointFileError(InputError, ValueError):
    """A keypoint file or array that does not follow the DWPose layout."""


def check_plausible(keypoints: "WholeBodyKeypoints", origin: str) -> None:
    """Keypoints that would give sparse-attention masks without any region: pixel coordinates where
    normalised ones belong, or no confident point in any frame."""
    pairs = [
        (keypoints.body, keypoints.body_score), (keypoints.hands, keypoints.hands_score),
        (keypoints.face, keypoints.face_score),
    ]  # fmt: skip
    if not any((scores > 0).any() for _, scores in pairs):
        raise KeypointFileError(
            f"{origin}: every keypoint has confidence 0 in every frame; the detector found no person, or its scores "
            "were not saved (a present point needs a score > 0)"
        )
    largest = max(float(np.abs(points[scores > 0]).max(initial=0)) for points, scores in pairs)
    if largest > PIXEL_COORDINATE_LIMIT:
        raise KeypointFileError(
            f"{origin}: confident keypoints reach coordinate {largest:.1f}; these look like pixels, but coordinates "
            "are normalised to [0, 1] (divide x by the image width and y by its height)"
        )


@dataclass
class WholeBodyKeypoints:
    """Keypoints of F video frames.

    body (F, 18, 2), body_score (F, 18), hands (F, 2, 21, 2), hands_score (F, 2, 21),
    face (F, 68, 2), face_score (F, 68); coordinates in [0, 1]; image_size = (height, width) in pixels.
    """

    body: np.ndarray
    body_score: np.ndarray
    hands: np.ndarray
    hands_score: np.ndarray
    face: np.ndarray
    face_score: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_frames(self) -> int:
        return int(self.body.shape[0])

    def validate(self, origin: str = "keypoints") -> None:
        frames = self.body.shape[0] if self.body.ndim == 3 else -1
        for name, tail in _EXPECTED_SHAPES.items():
            array = getattr(self, name)
            if array.shape != (frames, *tail):
                raise KeypointFileError(
                    f"{origin}: '{name}' has shape {tuple(array.shape)}, expected (frames, {', '.join(map(str, tail))})"
                    " in the DWPose layout (18 body, 2x21 hand, 68 face points)"
                )
            if not np.isfinite(array).all():
                raise KeypointFileError(f"{origin}: '{name}' holds NaN or infinite values")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise KeypointFileError(f"{origin}: image_size must be (height, width) > 0, got {self.image_size}")

    def slice_frames(self, start: int, stop: int) -> "WholeBodyKeypoints":
        """The keypoints of video frames [start, stop)."""
        return WholeBodyKeypoints(
            **{name: getattr(self, name)[start:stop] for name in _EXPECTED_SHAPES}, image_size=self.image_size
        )

    def save(self, path: str | Path) -> None:
        """Write an .npz atomically (temporary file in the same folder, then rename)."""
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float32) for name in _EXPECTED_SHAPES}
        with atomic_output(path, suffix=".npz") as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, image_size=np.asarray(self.image_size, dtype=np.int64), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "WholeBodyKeypoints":
        path = Path(path)
        if not path.is_file():
            raise KeypointFileError(f"keypoint file {path} does not exist; create it with infer_motion.py")
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise KeypointFileError(
                f"{path} is not a keypoint .npz (a zip of arrays, as WholeBodyKeypoints.save and infer_motion.py write "
                f"it): {type(error).__name__}"
            ) from error
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise KeypointFileError(f"{path} holds a single array, not a keypoint .npz of named arrays")
        try:
            with data:
                missing = [key for key in (*_EXPECTED_SHAPES, "image_size") if key not in data]
                if missing:
                    raise KeypointFileError(
                        f"{path}: missing arrays {missing}; expected a keypoint .npz written by infer_motion.py"
                    )
                fields = {name: data[name].astype(np.float32) for name in _EXPECTED_SHAPES}
                height, width = (int(v) for v in data["image_size"])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            if isinstance(error, KeypointFileError):
                raise
            raise KeypointFileError(f"{path} is not a readable keypoint .npz ({error})") from error
        keypoints = cls.__new__(cls)
        for name, value in fields.items():
            setattr(keypoints, name, value)
        keypoints.image_size = (height, width)
        keypoints.validate(origin=str(path))
        check_plausible(keypoints, origin=str(path))
        return keypoints

    def to_dwpose_dicts(self) -> list[dict[str, Any]]:
        """One DWPose dict per frame: {"bodies": {"candidate", "subset"}, "hands", "faces"}, with the
        score arrays alongside; missing body points get subset index -1 as in DWPose."""
        frames = []
        for t in range(self.num_frames):
            present = self.body_score[t] > 0
            subset = np.where(present, np.arange(BODY_POINTS), -1).astype(np.float32)[None]
            frames.append(
                {
                    "bodies": {"candidate": self.body[t].copy(), "subset": subset, "score": self.body_score[t][None]},
                    "hands": self.hands[t].copy(),
                    "hands_score": self.hands_score[t].copy(),
                    "faces": self.face[t][None].copy(),
                    "faces_score": self.face_score[t][None].copy(),
                }
            )
        return frames

    @classmethod
    def from_dwpose_dicts(cls, frames: list[dict[str, Any]], image_size: tuple[int, int]) -> "WholeBodyKeypoints":
        """Stack per-frame DWPose dicts. Without score arrays, a point counts as present when its subset
        index is >= 0 (body) or its coordinates are inside [0, 1] (hands, face)."""
        if not frames:
            raise KeypointFileError("no frames: a DWPose keypoint sequence needs at least one frame")

        def inside(points: np.ndarray) -> np.ndarray:
            return ((points >= 0) & (points <= 1)).all(axis=-1).astype(np.float32)

        body, body_score, hands, hands_score, face, face_score = [], [], [], [], [], []
        for index, frame in enumerate(frames):
            try:
                candidate = np.asarray(frame["bodies"]["candidate"], dtype=np.float32)[:BODY_POINTS]
                subset = np.asarray(frame["bodies"]["subset"], dtype=np.float32).reshape(-1, BODY_POINTS)[0]
                frame_hands = np.asarray(frame["hands"], dtype=np.float32)[:2]
                frame_face = np.asarray(frame["faces"], dtype=np.float32).reshape(-1, FACE_POINTS, 2)[0]
            except (KeyError, IndexError, ValueError) as error:
                raise KeypointFileError(
                    f"frame {index}: not a DWPose dict with bodies.candidate (18, 2), bodies.subset, "
                    f"hands (2, 21, 2) and faces (1, 68, 2) ({error!r})"
                ) from error
            body.append(candidate)
            score = frame["bodies"].get("score")
            body_score.append(
                np.asarray(score, dtype=np.float32).reshape(-1)[:BODY_POINTS] if score is not None
                else (subset >= 0).astype(np.float32)
            )  # fmt: skip
            hands.append(frame_hands)
            hands_score.append(np.asarray(frame.get("hands_score", inside(frame_hands)), dtype=np.float32))
            face.append(frame_face)
            face_score.append(
                np.asarray(frame.get("faces_score", inside(frame_face)[None]), dtype=np.float32).reshape(FACE_POINTS)
            )
        return cls(
            body=np.stack(body), body_score=np.stack(body_score), hands=np.stack(hands),
            hands_score=np.stack(hands_score), face=np.stack(face), face_score=np.stack(face_score),
            image_size=(int(image_size[0]), int(image_size[1])),
        )  # fmt: skip
