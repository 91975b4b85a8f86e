"""Whole-body 2D keypoints of a clip in the DWPose layout, and their file format.

The DWPose layout (what UniAnimate's pose guider was trained on): 18 OpenPose body points with the neck
at the shoulder midpoint, the 6 COCO-WholeBody foot points (left big toe, left small toe, left heel, then
the right ones), 21 points per hand (index 0 = the person's left hand, 1 = right hand, as COCO-WholeBody
orders them) and 68 face points. Coordinates are normalised to [0, 1] by the image width and height.
Every point carries a confidence score in [0, 1]; a missing point has score 0.

On disk a clip is one .npz holding the stacked arrays (keys below) plus ``image_size`` (height, width).
Files written before the feet were carried have no ``feet`` / ``feet_score``: they load with every foot
point missing (score 0).

As DWPose dicts, the body follows UniAnimate's body-and-foot candidate (its run_align_pose.py and
prepare_training_data.py): 20 points, the 18 body points then the left and the right toes (the midpoint of
each foot's big and small toe, present only when both toes are), which is what its drawing consumes; the
6 foot points themselves ride along as ``feet`` / ``feet_score``.
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
FOOT_POINTS = 6
HAND_POINTS = 21
FACE_POINTS = 68

# OpenPose-18 body order used by DWPose.
BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# COCO-WholeBody order of the foot points.
FOOT_NAMES = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
LEFT_ANKLE, RIGHT_ANKLE = BODY_NAMES.index("left_ankle"), BODY_NAMES.index("right_ankle")
# UniAnimate's body-and-foot points after the 18 body points: each foot's toes (big and small toe midpoint).
TOE_PAIRS = ((0, 1), (3, 4))  # foot point indices of (left toes), (right toes)
LEFT_TOES, RIGHT_TOES = BODY_POINTS, BODY_POINTS + 1
BODY_AND_TOE_POINTS = BODY_POINTS + len(TOE_PAIRS)

_EXPECTED_SHAPES = {
    "body": (BODY_POINTS, 2),
    "body_score": (BODY_POINTS,),
    "feet": (FOOT_POINTS, 2),
    "feet_score": (FOOT_POINTS,),
    "hands": (2, HAND_POINTS, 2),
    "hands_score": (2, HAND_POINTS),
    "face": (FACE_POINTS, 2),
    "face_score": (FACE_POINTS,),
}
# Every per-frame array of WholeBodyKeypoints, and the point groups (each with a "<part>_score" array).
ARRAY_FIELDS = tuple(_EXPECTED_SHAPES)
POINT_PARTS = ("body", "feet", "hands", "face")
_OPTIONAL_FIELDS = ("feet", "feet_score")  # absent from files written before the feet were carried


# A confident point farther than this outside [0, 1] means pixel coordinates were saved as normalised ones.
PIXEL_COORDINATE_LIMIT = 2.0


class KeypointFileError(InputError, ValueError):
    """A keypoint file or array that does not follow the DWPose layout."""


def _no_feet(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foot points (F, 6, 2) and scores (F, 6) of clips without feet: every point missing."""
    frames = body.shape[0] if body.ndim == 3 else 0
    return np.zeros((frames, FOOT_POINTS, 2), np.float32), np.zeros((frames, FOOT_POINTS), np.float32)


def check_plausible(keypoints: "WholeBodyKeypoints", origin: str) -> None:
    """Keypoints that would give sparse-attention masks without any region: pixel coordinates where
    normalised ones belong, or no confident point in any frame."""
    pairs = [(getattr(keypoints, part), getattr(keypoints, f"{part}_score")) for part in POINT_PARTS]
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
    face (F, 68, 2), face_score (F, 68), feet (F, 6, 2), feet_score (F, 6); coordinates in [0, 1];
    image_size = (height, width) in pixels. Without feet (None) every foot point is missing (score 0).
    """

    body: np.ndarray
    body_score: np.ndarray
    hands: np.ndarray
    hands_score: np.ndarray
    face: np.ndarray
    face_score: np.ndarray
    image_size: tuple[int, int]
    feet: np.ndarray | None = None
    feet_score: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.feet is None) != (self.feet_score is None):
            raise KeypointFileError("keypoints: give both 'feet' and 'feet_score', or neither (no feet detected)")
        if self.feet is None:
            self.feet, self.feet_score = _no_feet(self.body)
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
                    " in the DWPose layout (18 body, 6 foot, 2x21 hand, 68 face points)"
                )
            if not np.isfinite(array).all():
                raise KeypointFileError(f"{origin}: '{name}' holds NaN or infinite values")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise KeypointFileError(f"{origin}: image_size must be (height, width) > 0, got {self.image_size}")

    def slice_frames(self, start: int, stop: int) -> "WholeBodyKeypoints":
        """The keypoints of video frames [start, stop)."""
        return self.select_frames(slice(start, stop))

    def select_frames(self, frames: slice | list[int] | np.ndarray) -> "WholeBodyKeypoints":
        """The keypoints of the video frames that ``frames`` indexes (a slice or integer indices)."""
        arrays = {name: getattr(self, name)[frames] for name in ARRAY_FIELDS}
        return WholeBodyKeypoints(**arrays, image_size=self.image_size)

    def followed_by(self, other: "WholeBodyKeypoints") -> "WholeBodyKeypoints":
        """These frames, then other's (of the same image size)."""
        if other.image_size != self.image_size:
            raise ValueError(f"keypoints of {other.image_size} images cannot follow those of {self.image_size}")
        arrays = {name: np.concatenate([getattr(self, name), getattr(other, name)]) for name in ARRAY_FIELDS}
        return WholeBodyKeypoints(**arrays, image_size=self.image_size)

    def body_and_toes(self) -> tuple[np.ndarray, np.ndarray]:
        """UniAnimate's body-and-foot points: (F, 20, 2) = the 18 body points, then the left and right toes
        (midpoint of the big and small toe), and their scores (F, 20); a toe point's score is the smaller of
        its two toes' scores, so it counts as present only when both are."""
        toes = np.stack([self.feet[:, list(pair)].mean(axis=1) for pair in TOE_PAIRS], axis=1)
        toe_scores = np.stack([self.feet_score[:, list(pair)].min(axis=1) for pair in TOE_PAIRS], axis=1)
        return np.concatenate([self.body, toes], axis=1), np.concatenate([self.body_score, toe_scores], axis=1)

    def save(self, path: str | Path) -> None:
        """Write an .npz atomically (temporary file in the same folder, then rename)."""
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float32) for name in ARRAY_FIELDS}
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
                old_file = not any(key in data for key in _OPTIONAL_FIELDS)  # written before the feet
                required = [name for name in ARRAY_FIELDS if not (old_file and name in _OPTIONAL_FIELDS)]
                missing = [key for key in (*required, "image_size") if key not in data]
                if missing:
                    raise KeypointFileError(
                        f"{path}: missing arrays {missing}; expected a keypoint .npz written by infer_motion.py"
                    )
                fields = {name: data[name].astype(np.float32) for name in required}
                height, width = (int(v) for v in data["image_size"])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            if isinstance(error, KeypointFileError):
                raise
            raise KeypointFileError(f"{path} is not a readable keypoint .npz ({error})") from error
        keypoints = cls.__new__(cls)
        for name, value in fields.items():
            setattr(keypoints, name, value)
        if old_file:
            keypoints.feet, keypoints.feet_score = _no_feet(fields["body"])
        keypoints.image_size = (height, width)
        keypoints.validate(origin=str(path))
        check_plausible(keypoints, origin=str(path))
        return keypoints

    def to_dwpose_dicts(self) -> list[dict[str, Any]]:
        """One DWPose dict per frame as UniAnimate's pose extraction builds it: {"bodies": {"candidate" (20, 2),
        "subset" (1, 20)}, "hands" (2, 21, 2), "faces" (1, 68, 2)}, the body being body_and_toes(); plus the
        score arrays ("bodies"."score", "hands_score", "faces_score") and the foot points ("feet" (6, 2),
        "feet_score" (6,)). Missing body points get subset index -1 as in DWPose."""
        body, body_score = self.body_and_toes()
        frames = []
        for t in range(self.num_frames):
            present = body_score[t] > 0
            subset = np.where(present, np.arange(BODY_AND_TOE_POINTS), -1).astype(np.float32)[None]
            frames.append(
                {
                    "bodies": {"candidate": body[t].copy(), "subset": subset, "score": body_score[t][None].copy()},
                    "hands": self.hands[t].copy(),
                    "hands_score": self.hands_score[t].copy(),
                    "faces": self.face[t][None].copy(),
                    "faces_score": self.face_score[t][None].copy(),
                    "feet": self.feet[t].copy(),
                    "feet_score": self.feet_score[t].copy(),
                }
            )
        return frames

    @classmethod
    def from_dwpose_dicts(cls, frames: list[dict[str, Any]], image_size: tuple[int, int]) -> "WholeBodyKeypoints":
        """Stack per-frame DWPose dicts: DWPose's own (18 body points, no feet) or UniAnimate's body-and-foot
        ones (20). Without score arrays, a point counts as present when its subset index is >= 0 (body) or
        its coordinates are inside [0, 1] (hands, face, feet). Without "feet", UniAnimate's toe points become
        both toes of their foot (what its drawing shows is kept) and the heels are missing."""
        if not frames:
            raise KeypointFileError("no frames: a DWPose keypoint sequence needs at least one frame")

        def inside(points: np.ndarray) -> np.ndarray:
            return ((points >= 0) & (points <= 1)).all(axis=-1).astype(np.float32)

        arrays: dict[str, list[np.ndarray]] = {name: [] for name in ARRAY_FIELDS}
        for index, frame in enumerate(frames):
            try:
                subset = np.asarray(frame["bodies"]["subset"], dtype=np.float32)
                width = subset.shape[-1]
                if width not in (BODY_POINTS, BODY_AND_TOE_POINTS):
                    raise ValueError(f"subset rows of {width} points")
                subset = subset.reshape(-1, width)[0]
                candidate = np.asarray(frame["bodies"]["candidate"], dtype=np.float32)[:width].reshape(width, 2)
                frame_hands = np.asarray(frame["hands"], dtype=np.float32)[:2].reshape(2, HAND_POINTS, 2)
                frame_face = np.asarray(frame["faces"], dtype=np.float32).reshape(-1, FACE_POINTS, 2)[0]
            except (KeyError, IndexError, ValueError) as error:
                raise KeypointFileError(
                    f"frame {index}: not a DWPose dict with bodies.candidate (18 or 20, 2), bodies.subset, "
                    f"hands (2, 21, 2) and faces (1, 68, 2) ({error!r})"
                ) from error
            score = frame["bodies"].get("score")
            body_score = (
                np.asarray(score, dtype=np.float32).reshape(-1)[:width] if score is not None
                else (subset >= 0).astype(np.float32)
            )  # fmt: skip
            if "feet" in frame:
                feet = np.asarray(frame["feet"], dtype=np.float32).reshape(FOOT_POINTS, 2)
                feet_score = np.asarray(frame.get("feet_score", inside(feet)), dtype=np.float32).reshape(FOOT_POINTS)
            else:
                feet, feet_score = np.zeros((FOOT_POINTS, 2), np.float32), np.zeros(FOOT_POINTS, np.float32)
                for toe, pair in zip(range(BODY_POINTS, width), TOE_PAIRS):
                    feet[list(pair)], feet_score[list(pair)] = candidate[toe], body_score[toe]
            arrays["body"].append(candidate[:BODY_POINTS])
            arrays["body_score"].append(body_score[:BODY_POINTS])
            arrays["feet"].append(feet)
            arrays["feet_score"].append(feet_score)
            arrays["hands"].append(frame_hands)
            arrays["hands_score"].append(np.asarray(frame.get("hands_score", inside(frame_hands)), dtype=np.float32))
            arrays["face"].append(frame_face)
            arrays["face_score"].append(
                np.asarray(frame.get("faces_score", inside(frame_face)[None]), dtype=np.float32).reshape(FACE_POINTS)
            )
        return cls(
            **{name: np.stack(values) for name, values in arrays.items()},
            image_size=(int(image_size[0]), int(image_size[1])),
        )
