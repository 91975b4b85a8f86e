"""Long videos: overlapping windows of latent frames, blended at every denoising step.

A clip of L latent frames is cut into windows of `window` latent frames whose starts are `window - overlap`
apart; the last window is aligned to the end (so it may overlap its neighbour more). Each window is
denoised like a standalone 81-frame clip, so its y marks its latent frame 0 as the reference image's frame.

As in UniAnimate-DiT's long-video pipeline (diffsynth/pipelines/wan_video.py, WanUniAnimateLongVideoPipeline),
every window after the first keeps its leading `private` latent frames to itself: they start from noise of
their own (seeded per window), follow the window's own flow, and weigh 0 in the blend. They are the window's
"start of clip", which its y ties to the reference image; the clip's frames there come from the previous
window, for which they are ordinary continuation frames. The frames really shared by two windows are
averaged with weights that ramp linearly across them, so neighbouring windows hand over smoothly.

Window k over latent frames [s, s + window) sees video frames [4 s, 4 s + 4 (window - 1) + 1): its latent
frame 0 stands for video frame 4 s, and each later latent frame for the 4 video frames ending at 4 (s + j).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iasa.video.latent_grid import TEMPORAL_STRIDE


@dataclass(frozen=True)
class Window:
    """Latent frames [start, stop) of the clip."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def video_frames(self) -> slice:
        """The video frames this window is denoised for (4 (length - 1) + 1 of them)."""
        return slice(TEMPORAL_STRIDE * self.start, TEMPORAL_STRIDE * (self.stop - 1) + 1)


def plan_windows(num_latent_frames: int, window: int, overlap: int) -> list[Window]:
    """Windows covering [0, num_latent_frames); one window when the clip fits."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be in [0, window {window})")
    if num_latent_frames <= window:
        return [Window(0, num_latent_frames)]
    stride = window - overlap
    starts = list(range(0, num_latent_frames - window, stride)) + [num_latent_frames - window]
    return [Window(start, start + window) for start in starts]


def private_frame_counts(windows: list[Window], private: int) -> list[int]:
    """Leading latent frames each window keeps to itself: none for the first (its start is the clip's),
    `private` for every later one."""
    return [0 if index == 0 else private for index in range(len(windows))]


def window_weights(windows: list[Window], overlap: int, private: int) -> list[torch.Tensor]:
    """Per-window blend weights over its latent frames, (length,) each: 0 on a window's private leading frames,
    1 inside, and across the `overlap - private` frames shared with a neighbour a linear ramp from
    1 / (shared + 1) at the edge. Outer edges of the clip keep weight 1."""
    if not 0 <= private <= overlap:
        raise ValueError(f"private leading frames {private} must be in [0, overlap {overlap}]: a window's private "
                         "frames must lie inside the previous window")  # fmt: skip
    shared = overlap - private
    ramp = torch.arange(1, shared + 1, dtype=torch.float32) / (shared + 1)
    weights = []
    for index, (window, own) in enumerate(zip(windows, private_frame_counts(windows, private))):
        weight = torch.ones(window.length)
        weight[:own] = 0
        if shared and index > 0:
            weight[own:overlap] = ramp
        if shared and index < len(windows) - 1:
            weight[-shared:] = torch.minimum(weight[-shared:], ramp.flip(0))
        weights.append(weight)
    return weights


def blend_windows(
    predictions: list[torch.Tensor], windows: list[Window], weights: list[torch.Tensor], num_latent_frames: int
) -> torch.Tensor:
    """Weighted average of per-window predictions (b, c, window.length, h, w) -> (b, c, num_latent_frames, h, w)."""
    first = predictions[0]
    total = first.new_zeros((*first.shape[:2], num_latent_frames, *first.shape[3:]), dtype=torch.float32)
    norm = torch.zeros(num_latent_frames, dtype=torch.float32, device=first.device)
    for prediction, window, weight in zip(predictions, windows, weights):
        weight = weight.to(first.device)
        total[:, :, window.start : window.stop] += prediction.float() * weight.view(1, 1, -1, 1, 1)
        norm[window.start : window.stop] += weight
    if (norm <= 0).any():
        raise RuntimeError(f"latent frames {torch.nonzero(norm <= 0).flatten().tolist()} are covered by no window")
    return (total / norm.view(1, 1, -1, 1, 1)).to(first.dtype)
