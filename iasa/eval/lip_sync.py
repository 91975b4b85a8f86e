"""A lip-sync proxy for the synthetic avatar: does the generated mouth open and close when the true one does,
and as wide?

``mouth_opening`` measures, in each frame's IMAGE, the area of mouth interior inside the ground-truth mouth
region (iasa.eval.region_masks.mouth_mask). The renderer paints the opening in three colours that are the
same for every identity (iasa.synthetic.avatar: the dark inside, the upper teeth, the tongue); the person's
own colours around the mouth (skin, lips, outlines) are read off the reference video (``mouth_colours``).
Each pixel is read as a blend of the two of these colours that explain it best and counts by its interior
share: anti-aliased edges count by coverage, so the area does not jump when the mouth moves by a fraction
of a pixel; a blend of two of the person's own colours (lips into their outline) counts 0; and comparing
with the person's own colours, not a fixed tolerance, keeps dark lips on deep skin (about 18 RGB levels
from the dark inside) from counting as an opening. The area is divided by the squared face width (temple
to temple, rigid), so it depends neither on the framing nor on the size of the region it is counted in.

``lip_sync`` compares the two openings over time with ``concordance``, 2 cov / (var_g + var_r): Pearson's
correlation times the agreement of the two amplitudes. Plain Pearson cannot score a still mouth ~0 at the
dataset's 256 px: a resting mouth opening is about 3 px tall, its drawn area wavers by a few pixels as the
head moves by fractions of a pixel, and Pearson scales that wavering up to a full-size signal (|r| up to
0.31 on frozen mouths, 2 clips x 8 skin tones); the amplitude factor brings it to |0.08| or less, while a
blurred, noisy copy of the true video keeps 0.8-0.96. A mouth that moves in time but opens half as wide
scores 0.8, not 1.
"""

from __future__ import annotations

import warnings

import numpy as np

from iasa.eval.region_masks import face_widths, mouth_mask
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.synthetic.avatar import MOUTH_INSIDE, TEETH, TONGUE

INTERIOR_COLOURS = np.array([MOUTH_INSIDE, TEETH, TONGUE], dtype=np.float64)
# The reference's own colours around the mouth (skin, lips, their outlines, shading): its most frequent
# ones there, each at least DISTINCT_COLOUR (RGB, Euclidean) from those taken before and from the interior
# colours, so that near-copies of one colour (its rounding in the drawing) do not fill the list.
OTHER_COLOURS = 16
DISTINCT_COLOUR = 10.0
# Below this standard deviation over time (in units of the opening) a series counts as constant.
CONSTANT_SERIES_STD = 1e-9


def _check_video(frames: np.ndarray, keypoints: WholeBodyKeypoints, what: str) -> None:
    expected = (keypoints.num_frames, *keypoints.image_size, 3)
    if frames.dtype != np.uint8 or frames.shape != expected:
        raise ValueError(
            f"{what}: expected a uint8 video of shape {expected} (the keypoints' frames and image size), "
            f"got {frames.dtype} {tuple(frames.shape)}"
        )


def mouth_colours(reference: np.ndarray, keypoints: WholeBodyKeypoints) -> np.ndarray:
    """(K, 3) float, K <= OTHER_COLOURS: the most frequent distinct colours of the reference video
    (F, H, W, 3) uint8 inside its mouth regions that are not mouth-interior colours: the person's skin,
    lips and their outlines."""
    _check_video(reference, keypoints, "mouth_colours")
    colours, counts = np.unique(reference[mouth_mask(keypoints)], axis=0, return_counts=True)
    taken = list(INTERIOR_COLOURS)
    for colour in colours[np.argsort(-counts, kind="stable")].astype(np.float64):
        if len(taken) == len(INTERIOR_COLOURS) + OTHER_COLOURS:
            break
        if np.linalg.norm(np.array(taken) - colour, axis=1).min() >= DISTINCT_COLOUR:
            taken.append(colour)
    return np.array(taken[len(INTERIOR_COLOURS) :]).reshape(-1, 3)


def interior_fraction(pixels: np.ndarray, other_colours: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) float in [0, 1]: how much of each pixel is mouth interior. Each pixel is
    read as a blend a A + (1 - a) B of the two colours, among the interior colours and the other colours
    (K, 3), that explain it best (an anti-aliased edge mixes the two parts that meet there); its interior
    share is the weight of the interior colours in that blend. An edge pixel thus counts by its coverage,
    so the measured area does not jump when the mouth moves by a fraction of a pixel, and a blend of two of
    the person's own colours (lips into their outline) counts 0."""
    other = np.asarray(other_colours, dtype=np.float64).reshape(-1, 3)
    if len(other) == 0:
        raise ValueError("interior_fraction: no colours of the person around the mouth to compare with (other_colours is empty)")
    classes = np.concatenate([INTERIOR_COLOURS, other])
    is_interior = np.arange(len(classes)) < len(INTERIOR_COLOURS)
    first, second = np.triu_indices(len(classes), k=1)  # every pair of colours, and each colour alone
    first, second = np.concatenate([first, np.arange(len(classes))]), np.concatenate([second, np.arange(len(classes))])
    colours = pixels.astype(np.float64).reshape(-1, 1, 3)
    start, step = classes[second], classes[first] - classes[second]  # blend = start + a * step
    length = np.einsum("pc,pc->p", step, step)
    weight = np.clip(np.einsum("npc,pc->np", colours - start, step) / np.maximum(length, 1e-12), 0.0, 1.0)
    residual = np.linalg.norm(colours - (start + weight[..., None] * step), axis=-1)
    best = residual.argmin(axis=1)
    weight = weight[np.arange(len(best)), best]
    share = weight * is_interior[first[best]] + (1 - weight) * is_interior[second[best]]
    return share.reshape(pixels.shape[:-1])


def mouth_opening(frames: np.ndarray, keypoints: WholeBodyKeypoints, other_colours: np.ndarray | None = None) -> np.ndarray:
    """(F,) float: mouth-interior pixels inside the keypoints' mouth region, per squared face width; NaN in
    frames without a mouth region or face width. frames (F, H, W, 3) uint8 RGB, keypoints of the same F
    frames (the ground truth's: the region is where the true mouth is); other_colours (K, 3): the colours
    that are not the interior (mouth_colours of the reference; by default of ``frames`` themselves, right
    when they are a render)."""
    _check_video(frames, keypoints, "mouth_opening")
    if other_colours is None:
        other_colours = mouth_colours(frames, keypoints)
    region = mouth_mask(keypoints)
    widths = face_widths(keypoints)
    opening = np.full(keypoints.num_frames, np.nan)
    for t in range(keypoints.num_frames):
        if region[t].any() and widths[t] > 0:
            opening[t] = interior_fraction(frames[t][region[t]], other_colours).sum() / widths[t] ** 2
    return opening


def concordance(generated: np.ndarray, reference: np.ndarray) -> float:
    """2 cov(g, r) / (var g + var r) over the steps where both series are finite: Pearson's correlation
    times the agreement of the two amplitudes, 2 sd_g sd_r / (sd_g^2 + sd_r^2). 1 iff g = r + a constant.
    A constant series has no correlation: it scores 0, with a warning that names it."""
    g, r = np.asarray(generated, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    both = np.isfinite(g) & np.isfinite(r)
    if both.sum() < 2:
        warnings.warn(f"lip sync: only {int(both.sum())} frames with a mouth region; scored 0", stacklevel=3)
        return 0.0
    g, r = g[both] - g[both].mean(), r[both] - r[both].mean()
    constant = [name for name, series in (("generated", g), ("reference", r)) if series.std() <= CONSTANT_SERIES_STD]
    if constant:
        warnings.warn(f"lip sync: the {' and '.join(constant)} mouth opening is constant over the clip; scored 0", stacklevel=3)
        return 0.0
    return float(2 * np.dot(g, r) / (np.dot(g, g) + np.dot(r, r)))


def lip_sync(generated: np.ndarray, reference: np.ndarray, keypoints: WholeBodyKeypoints) -> float:
    """concordance of mouth_opening(generated) with mouth_opening(reference), both read in the reference's
    mouth region (keypoints: the reference's) with the reference's colours. In [-1, 1]; 1 = in sync."""
    other_colours = mouth_colours(reference, keypoints)
    return concordance(mouth_opening(generated, keypoints, other_colours), mouth_opening(reference, keypoints, other_colours))
