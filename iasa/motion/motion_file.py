"""SMPL-X motion clips in the BEAT / SMPL-X .npz format that EMAGE writes and reads.

A clip of T frames holds, per frame, the axis-angle rotations of the 55 SMPL-X joints (root, 21 body
joints, jaw, two eyes, 2 x 15 finger joints), 100 expression coefficients and the root translation;
the body shape (300 betas) is shared by all frames.

On disk (keys as in BEAT2): poses (T, 165), expressions (T, 100), trans (T, 3), betas (300,),
model (a string, 'smplx2020'), gender (a string), mocap_frame_rate (a scalar).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iasa.errors import InputError
from iasa.atomic_io import atomic_output

NUM_JOINTS = 55
POSE_DIMS = NUM_JOINTS * 3
NUM_EXPRESSIONS = 100
NUM_BETAS = 300
REQUIRED_KEYS = ("poses", "expressions", "trans", "betas", "model", "gender", "mocap_frame_rate")


class MotionFileError(InputError, ValueError):
    """A motion file or array that does not follow the BEAT / SMPL-X layout."""


@dataclass
class SmplxMotion:
    """T frames of SMPL-X motion.

    poses (T, 165) float32 axis-angle of 55 joints, expressions (T, 100), trans (T, 3) metres,
    betas (300,), fps frames per second.
    """

    poses: np.ndarray
    expressions: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    fps: float = 30.0
    model: str = "smplx2020"
    gender: str = "neutral"

    def __post_init__(self) -> None:
        for name in ("poses", "expressions", "trans", "betas"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        self.fps = float(self.fps)
        self.validate()

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def slice_frames(self, start: int, stop: int) -> "SmplxMotion":
        """Frames [start, stop) (the shape and everything else shared)."""
        frames = slice(start, stop)
        return SmplxMotion(
            self.poses[frames], self.expressions[frames], self.trans[frames], self.betas, self.fps, self.model, self.gender
        )

    def validate(self, origin: str = "motion") -> None:
        """Raise MotionFileError naming the first array with a wrong shape, a non-finite value or a frame
        count that disagrees with ``poses``."""
        expected_tails = {"poses": (POSE_DIMS,), "expressions": (NUM_EXPRESSIONS,), "trans": (3,)}
        for name, tail in expected_tails.items():
            array = getattr(self, name)
            if array.ndim != 2 or array.shape[1:] != tail:
                raise MotionFileError(
                    f"{origin}: '{name}' has shape {tuple(array.shape)}, expected (frames, {tail[0]})"
                )
        frames = self.poses.shape[0]
        for name in ("expressions", "trans"):
            if getattr(self, name).shape[0] != frames:
                raise MotionFileError(
                    f"{origin}: '{name}' has {getattr(self, name).shape[0]} frames but 'poses' has {frames}"
                )
        if self.betas.shape != (NUM_BETAS,):
            raise MotionFileError(f"{origin}: 'betas' has shape {tuple(self.betas.shape)}, expected ({NUM_BETAS},)")
        for name in ("poses", "expressions", "trans", "betas"):
            if not np.isfinite(getattr(self, name)).all():
                raise MotionFileError(f"{origin}: '{name}' holds NaN or infinite values")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise MotionFileError(f"{origin}: frame rate must be positive, got {self.fps}")

    @classmethod
    def still(cls, num_frames: int, fps: float = 30.0) -> "SmplxMotion":
        """A clip of ``num_frames`` frames in the rest pose with a neutral face and shape."""
        return cls(
            poses=np.zeros((num_frames, POSE_DIMS), np.float32),
            expressions=np.zeros((num_frames, NUM_EXPRESSIONS), np.float32),
            trans=np.zeros((num_frames, 3), np.float32),
            betas=np.zeros(NUM_BETAS, np.float32),
            fps=fps,
        )

    def save(self, path: str | Path) -> None:
        """Write the BEAT / SMPL-X .npz atomically (temporary file in the same folder, then rename)."""
        self.validate()
        with atomic_output(path, suffix=".npz") as temporary:
            with open(temporary, "wb") as handle:
                np.savez(
                    handle,
                    poses=self.poses,
                    expressions=self.expressions,
                    trans=self.trans,
                    betas=self.betas,
                    model=np.array(self.model),
                    gender=np.array(self.gender),
                    mocap_frame_rate=np.array(self.fps),
                )

    @classmethod
    def load(cls, path: str | Path) -> "SmplxMotion":
        """Read and validate a BEAT / SMPL-X .npz; errors name the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise MotionFileError(f"motion file {path} does not exist; create it with infer_motion.py")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in REQUIRED_KEYS if key not in data]
                if missing:
                    raise MotionFileError(
                        f"{path}: missing keys {missing}; a BEAT / SMPL-X motion .npz holds {list(REQUIRED_KEYS)}"
                    )
                arrays = {key: data[key] for key in REQUIRED_KEYS}
        except MotionFileError:
            raise
        except (OSError, ValueError) as error:
            raise MotionFileError(f"{path} is not a readable motion .npz ({error})") from error
        try:
            fps = float(np.asarray(arrays["mocap_frame_rate"]).reshape(()))
        except (TypeError, ValueError) as error:
            raise MotionFileError(f"{path}: 'mocap_frame_rate' must be one number ({error})") from error
        motion = cls.__new__(cls)
        for name in ("poses", "expressions", "trans", "betas"):
            array = arrays[name]
            if not np.issubdtype(array.dtype, np.number):
                raise MotionFileError(f"{path}: '{name}' has dtype {array.dtype}, expected numbers")
            setattr(motion, name, array.astype(np.float32))
        motion.fps = fps
        motion.model = str(arrays["model"])
        motion.gender = str(arrays["gender"])
        motion.validate(origin=str(path))
        return motion
