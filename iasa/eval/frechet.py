"""Frechet distance between Gaussian fits of two feature sets (the distance behind FID and FGD).

d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), with sample means and unbiased
covariances. As in EMAGE's FGD, a small ridge ``eps`` is added to both covariances inside the
matrix square root (only there), which keeps it defined for rank-deficient features.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

COVARIANCE_RIDGE = 1e-6


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(samples, dims) -> mean (dims,), unbiased covariance (dims, dims)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"expected features (samples >= 2, dims), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance_from_statistics(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray, eps: float = COVARIANCE_RIDGE
) -> float:
    """Squared Frechet distance between N(mean_a, cov_a) and N(mean_b, cov_b)."""
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(f"feature sizes differ: {mean_a.shape} vs {mean_b.shape}")
    ridge = np.eye(cov_a.shape[0]) * eps
    root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(np.real(root)))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, eps: float = COVARIANCE_RIDGE) -> float:
    """Squared Frechet distance between Gaussian fits of (samples, dims) feature sets."""
    return frechet_distance_from_statistics(*gaussian_statistics(features_a), *gaussian_statistics(features_b), eps=eps)
