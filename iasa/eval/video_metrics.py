"""Frame-quality metrics of a generated video against its ground truth: PSNR, SSIM, temporal flicker,
per region (face, mouth, hands) and with the lip-sync proxy, per clip and over a set of clips.

Videos are (F, H, W, 3) uint8 RGB, compared at 255 grey levels of range.
- PSNR: 10 log10(255^2 / MSE), the MSE over every pixel and channel of the clip (inside the mask when one
  is given); identical videos give inf.
- SSIM: Wang, Bovik, Sheikh & Simoncelli (2004), on each RGB channel, averaged over the channels (as
  scikit-image's ``structural_similarity(..., channel_axis=-1)``): an 11 x 11 Gaussian window of sigma 1.5,
  K1 = 0.01, K2 = 0.03, L = 255, population (not sample) variances, the map kept only where the window
  lies inside the frame (the authors' 'valid' filtering; 5 pixels are cut at each border). A video's SSIM
  is the mean of the map over all its frames; masked, the mean over the mask's pixels inside that area.
- flicker: mean |(g_t - g_{t-1}) - (r_t - r_{t-1})| in grey levels over every pixel, channel and
  consecutive frame pair: 0 when the generated video changes from frame to frame exactly as the ground
  truth does (whatever its constant error), large for per-frame noise.

``aggregate`` averages clips equally. PSNRs are averaged as MSEs, then converted back (the inverse of
10 log10(255^2 / MSE) is exact): a single clip reproduced exactly (inf dB) then counts as MSE 0, not as an
infinite mean, and the result is the PSNR of the mean squared error. A metric that a clip does not define
(NaN: no hands in view) is left out of that metric's mean; a metric no clip defines stays NaN.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from iasa.eval.lip_sync import lip_sync
from iasa.eval.region_masks import region_pixel_masks
from iasa.pose.keypoints import WholeBodyKeypoints

PIXEL_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11 x 11 window: Wang et al.'s, and scikit-image's at sigma 1.5 (truncate 3.5)
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_METRICS = ("psnr", "face_psnr", "mouth_psnr", "hand_psnr")
CLIP_METRICS = ("psnr", "ssim", "face_psnr", "mouth_psnr", "hand_psnr", "lip_sync", "flicker")


def _check_pair(generated: np.ndarray, reference: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Both videos (F, H, W, 3) uint8 of one shape; the mask (F, H, W) or (H, W) bool, returned as (F, H, W)."""
    for name, video in (("generated", generated), ("reference", reference)):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"{name}: expected a (frames, height, width, 3) uint8 video, got {video.dtype} {tuple(video.shape)}")
    if generated.shape != reference.shape:
        raise ValueError(f"generated video {tuple(generated.shape)} and reference {tuple(reference.shape)} differ in shape")
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    try:
        return np.broadcast_to(mask, generated.shape[:3])
    except ValueError:
        raise ValueError(f"mask {tuple(mask.shape)} fits neither (frames, height, width) nor (height, width) of {tuple(generated.shape)}") from None


def mse_to_psnr(mse: float) -> float:
    return math.inf if mse == 0 else float(10 * np.log10(PIXEL_RANGE**2 / mse))


def psnr_to_mse(psnr: float) -> float:
    return 0.0 if psnr == math.inf else float(PIXEL_RANGE**2 / 10 ** (psnr / 10))


def psnr(generated: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB over the whole clip, or over the pixels of mask (F, H, W) / (H, W) bool (NaN if empty)."""
    mask = _check_pair(generated, reference, mask)
    total, count = 0.0, 0
    for t in range(generated.shape[0]):  # a frame at a time: a long clip in float64 would not fit
        error = (generated[t].astype(np.int32) - reference[t].astype(np.int32)) ** 2
        if mask is not None:
            error = error[mask[t]]
        total, count = total + float(error.sum()), count + error.size
    return mse_to_psnr(total / count) if count else math.nan


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def ssim_map(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 frames -> (H - 10, W - 10) float64 SSIM, averaged over the channels, at every pixel
    whose window lies inside the frame (the map of pixel (SSIM_RADIUS + i, SSIM_RADIUS + j) at [i, j])."""
    window = _gaussian_window()
    x, y = generated.astype(np.float64), reference.astype(np.float64)

    def local_mean(image: np.ndarray) -> np.ndarray:
        # The border mode does not matter: only pixels whose whole window is inside the frame are kept.
        blurred = cv2.sepFilter2D(image, cv2.CV_64F, window, window, borderType=cv2.BORDER_REFLECT)
        return blurred[SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x**2
    var_y = local_mean(y * y) - mean_y**2
    cov = local_mean(x * y) - mean_x * mean_y
    c1, c2 = (SSIM_K1 * PIXEL_RANGE) ** 2, (SSIM_K2 * PIXEL_RANGE) ** 2
    ssim = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return ssim.mean(axis=-1)


def ssim(generated: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over every frame, or over the pixels of mask (F, H, W) / (H, W) bool that lie at least
    SSIM_RADIUS pixels inside the frame (NaN if there are none)."""
    mask = _check_pair(generated, reference, mask)
    _, height, width, _ = generated.shape
    if min(height, width) <= 2 * SSIM_RADIUS:
        raise ValueError(f"SSIM needs frames larger than {2 * SSIM_RADIUS + 1} pixels, got {height}x{width}")
    total, count = 0.0, 0
    for t in range(generated.shape[0]):
        values = ssim_map(generated[t], reference[t])
        if mask is not None:
            values = values[mask[t, SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]]
        total, count = total + float(values.sum()), count + values.size
    return total / count if count else math.nan


def flicker(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean |(g_t - g_{t-1}) - (r_t - r_{t-1})| in grey levels over t = 1..F-1, pixels and channels."""
    _check_pair(generated, reference, None)
    if generated.shape[0] < 2:
        raise ValueError(f"flicker needs at least 2 frames, got {generated.shape[0]}")
    total = 0
    for t in range(1, generated.shape[0]):
        change = generated[t].astype(np.int32) - generated[t - 1] - (reference[t].astype(np.int32) - reference[t - 1])
        total += int(np.abs(change).sum())
    return total / generated[1:].size


def evaluate_clip(generated: np.ndarray, reference: np.ndarray, keypoints: WholeBodyKeypoints) -> dict[str, float]:
    """Every metric of one clip: CLIP_METRICS -> float. keypoints: the reference's, of its F frames and size
    (region masks and the mouth region come from them). A region absent from every frame gives NaN."""
    _check_pair(generated, reference, None)
    if reference.shape[:3] != (keypoints.num_frames, *keypoints.image_size):
        raise ValueError(
            f"keypoints of {keypoints.num_frames} frames of {keypoints.image_size} do not describe the reference "
            f"video {tuple(reference.shape)}"
        )
    masks = region_pixel_masks(keypoints)
    return {
        "psnr": psnr(generated, reference),
        "ssim": ssim(generated, reference),
        "face_psnr": psnr(generated, reference, masks["face"]),
        "mouth_psnr": psnr(generated, reference, masks["mouth"]),
        "hand_psnr": psnr(generated, reference, masks["hands"]),
        "lip_sync": lip_sync(generated, reference, keypoints),
        "flicker": flicker(generated, reference),
    }


def aggregate(clips: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over clips (dicts with the same keys), PSNRs through their MSEs; NaNs are
    left out of each mean (a metric NaN in every clip stays NaN)."""
    if not clips:
        raise ValueError("aggregate needs at least one clip's metrics")
    keys = list(clips[0])
    for index, clip in enumerate(clips):
        if list(clip) != keys:
            raise ValueError(f"clip {index} has metrics {sorted(clip)}, clip 0 has {sorted(keys)}")
    result = {}
    for key in keys:
        values = np.array([clip[key] for clip in clips], dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            result[key] = math.nan
        elif key in PSNR_METRICS:
            result[key] = mse_to_psnr(float(np.mean([psnr_to_mse(value) for value in values])))
        else:
            result[key] = float(values.mean())
    return result
