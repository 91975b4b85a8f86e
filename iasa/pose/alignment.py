"""Least-squares similarity alignment of 2D point sets (Umeyama's method without reflections)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity2D:
    """x -> scale * rotation @ x + translation for 2D points."""

    scale: float
    rotation: np.ndarray  # (2, 2), det +1
    translation: np.ndarray  # (2,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) -> (..., 2)."""
        return self.scale * points @ self.rotation.T + self.translation


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity2D:
    """The similarity that maps ``source`` (N, 2) closest to ``target`` (N, 2) in the least-squares sense.

    Needs N >= 2 distinct source points (a similarity has four degrees of freedom).
    """
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"expected two (N, 2) point sets, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if len(source) < 2 or source_variance < 1e-12:
        raise ValueError("need at least two distinct points to fit a similarity transform")
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return Similarity2D(scale=scale, rotation=rotation, translation=translation)
