"""L1 diversity of generated motion, as defined by EMAGE's emage_evaltools (L1div).

For each clip, the mean absolute deviation of every frame from the clip's mean pose, summed over
all coordinates; clips are pooled frame-weighted: sum over clips of sum |x_t - mean| / total frames.
Computed on joint positions (frames, joints * 3); larger means more varied motion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def l1_diversity(clips: Sequence[np.ndarray]) -> float:
    """clips: arrays (frames, features), e.g. SMPL-X joint positions flattened to (frames, 165)."""
    if not clips:
        raise ValueError("L1 diversity needs at least one clip")
    total_deviation, total_frames = 0.0, 0
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float64).reshape(len(clip), -1)
        total_deviation += np.abs(clip - clip.mean(axis=0)).sum()
        total_frames += clip.shape[0]
    if total_frames == 0:
        raise ValueError("L1 diversity needs at least one frame")
    return float(total_deviation / total_frames)
