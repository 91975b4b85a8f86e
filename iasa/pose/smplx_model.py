"""SMPL-X forward pass with the ``smplx`` package: motion -> (T, 144, 3) joints and face landmarks."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from iasa.errors import InputError
from iasa.motion.motion_file import NUM_BETAS, NUM_EXPRESSIONS, SmplxMotion

SMPLX_DOWNLOAD_HINT = (
    "register at https://smpl-x.is.tue.mpg.de, download the SMPL-X 2020 neutral model and put "
    "SMPLX_NEUTRAL_2020.npz under <smplx_dir>/smplx/ (or leave --smplx_dir unset to draw the built-in skeleton)"
)


class SmplxModelMissingError(InputError, FileNotFoundError):
    """The SMPL-X model file is not where it was looked for."""


def smplx_model_file(smplx_dir: str | Path, gender: str = "neutral") -> Path:
    """Where smplx.create looks for the 2020 model of ``gender``: <smplx_dir>/smplx/SMPLX_<GENDER>_2020.npz."""
    return Path(smplx_dir) / "smplx" / f"SMPLX_{gender.upper()}_2020.npz"


@lru_cache(maxsize=2)
def load_smplx_model(smplx_dir: str, gender: str = "neutral", flat_hand_mean: bool = False) -> torch.nn.Module:
    """The SMPL-X 2020 model with 300 betas, 100 expressions, full (non-PCA) hand poses and the face contour."""
    import smplx

    path = smplx_model_file(smplx_dir, gender)
    if not path.is_file():
        raise SmplxModelMissingError(f"SMPL-X model file {path} not found: {SMPLX_DOWNLOAD_HINT}")
    model = smplx.create(
        str(smplx_dir), model_type="smplx", gender=f"{gender.upper()}_2020", ext="npz",
        num_betas=NUM_BETAS, num_expression_coeffs=NUM_EXPRESSIONS, use_pca=False,
        flat_hand_mean=flat_hand_mean, use_face_contour=True,
    )  # fmt: skip
    return model.eval()


@torch.no_grad()
def smplx_points(
    motion: SmplxMotion, smplx_dir: str | Path, flat_hand_mean: bool = False, chunk_frames: int = 256
) -> np.ndarray:
    """(T, 144, 3) SMPL-X joints, extra joints, face landmarks and contour (smplx.joint_names order), metres."""
    model = load_smplx_model(str(smplx_dir), motion.gender, flat_hand_mean)
    poses = torch.from_numpy(rearrange(motion.poses, "t (j c) -> t j c", c=3)).float()
    expressions = torch.from_numpy(motion.expressions).float()
    trans = torch.from_numpy(motion.trans).float()
    betas = torch.from_numpy(motion.betas).float()[None]
    chunks = []
    for start in range(0, motion.num_frames, chunk_frames):
        pose = poses[start : start + chunk_frames]
        frames = pose.shape[0]
        output = model(
            betas=betas.expand(frames, -1),
            global_orient=pose[:, 0],
            body_pose=rearrange(pose[:, 1:22], "t j c -> t (j c)"),
            jaw_pose=pose[:, 22],
            leye_pose=pose[:, 23],
            reye_pose=pose[:, 24],
            left_hand_pose=rearrange(pose[:, 25:40], "t j c -> t (j c)"),
            right_hand_pose=rearrange(pose[:, 40:55], "t j c -> t (j c)"),
            expression=expressions[start : start + chunk_frames],
            transl=trans[start : start + chunk_frames],
            return_verts=True,
        )
        chunks.append(output.joints.numpy())
    if not chunks:
        return np.zeros((0, 144, 3), np.float32)
    return np.concatenate(chunks).astype(np.float32)
