"""Video metrics of the miniature Table 2: PSNR and SSIM against scikit-image and known values, region masks
against what the renderer draws, the lip-sync proxy and flicker on renders of known motions, aggregation,
the comparison grid and the frames-per-second helper."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from iasa.eval import speed
from iasa.eval.comparison_grid import write_comparison_grid
from iasa.eval.lip_sync import concordance, lip_sync, mouth_opening
from iasa.eval.region_masks import face_mask, hand_mask, mouth_mask, region_pixel_masks
from iasa.eval.video_metrics import CLIP_METRICS, aggregate, evaluate_clip, flicker, psnr, ssim
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.synthetic.avatar import MOUTH_INSIDE, TEETH, TONGUE, render_avatar
from iasa.synthetic.dataset import SyntheticDatasetConfig, clip_audio, clip_keypoints, plan_split
from iasa.synthetic.identity import SKIN_TONES, Identity

CONFIG = SyntheticDatasetConfig(heldout_clips=2, identities_heldout=2, frames=49, size=256)
SHIFT_FRAMES = 7  # a quarter of a second at 30 fps: several syllables out of step


@pytest.fixture(scope="module")
def clip() -> tuple[WholeBodyKeypoints, Identity]:
    _, specs = plan_split(CONFIG, "heldout")
    spec = specs[0]
    return clip_keypoints(spec, clip_audio(spec, CONFIG), CONFIG), Identity.sample(spec.identity.seed)


@pytest.fixture(scope="module")
def reference(clip: tuple[WholeBodyKeypoints, Identity]) -> np.ndarray:
    keypoints, identity = clip
    return render_avatar(keypoints, identity)


def identity_with_skin(name: str) -> Identity:
    return next(Identity.sample(seed) for seed in range(1000) if Identity.sample(seed).skin_name == name)


def with_face(keypoints: WholeBodyKeypoints, face: np.ndarray) -> WholeBodyKeypoints:
    return WholeBodyKeypoints(
        keypoints.body, keypoints.body_score, keypoints.hands, keypoints.hands_score, face.astype(np.float32),
        keypoints.face_score, keypoints.image_size,
    )  # fmt: skip


def with_lip_shapes(keypoints: WholeBodyKeypoints, frames: np.ndarray) -> WholeBodyKeypoints:
    """The motion with each frame's lip shape (48-67 about their centre) taken from frame frames[t]."""
    face = keypoints.face.copy()
    lips = face[:, 48:68]
    centre = lips.mean(axis=1, keepdims=True)
    face[:, 48:68] = centre + (lips - centre)[frames]
    return with_face(keypoints, face)


def degrade(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """A blurred, noisy, slightly recoloured copy: a stand-in for an imperfect generated video."""
    rng = np.random.default_rng(seed)
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 1.0) for frame in video]).astype(np.float64)
    noisy = blurred + rng.normal(0.0, 6.0, video.shape) + np.array([8.0, -5.0, 4.0])
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def structured_image(seed: int, size: tuple[int, int] = (64, 80)) -> np.ndarray:
    """Gradients, a bar pattern and a disc: the edges and flat areas that random noise lacks."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, ((x // 6) % 2) * 200 + 30], axis=-1)
    cv2.circle(image, (int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20))), 12, (250, 40, 90), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
    pairs = [(noise, rng.integers(0, 256, noise.shape, dtype=np.uint8))]
    pairs.append((np.clip(noise + rng.integers(-30, 31, noise.shape), 0, 255).astype(np.uint8), noise))
    for seed in (2, 3):
        clean = structured_image(seed)
        blurred = cv2.GaussianBlur(clean, (0, 0), 1.2)
        pairs.append((np.clip(blurred + rng.normal(0, 8, clean.shape), 0, 255).astype(np.uint8), clean))
    return pairs


# --- PSNR and SSIM ---------------------------------------------------------------------------------------


def skimage_ssim(generated: np.ndarray, reference: np.ndarray, full: bool = False):
    """Wang et al.'s SSIM as scikit-image computes it: Gaussian window sigma 1.5, population variances."""
    return structural_similarity(
        generated, reference, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, full=full,
    )  # fmt: skip


@pytest.mark.parametrize("index", range(4))
def test_psnr_and_ssim_match_scikit_image(index: int) -> None:
    generated, reference = image_pairs()[index]
    assert psnr(generated[None], reference[None]) == pytest.approx(
        peak_signal_noise_ratio(reference, generated, data_range=255), abs=1e-4
    )
    assert ssim(generated[None], reference[None]) == pytest.approx(skimage_ssim(generated, reference), abs=1e-4)


def test_video_ssim_is_the_mean_over_frames_and_psnr_pools_the_squared_error(reference: np.ndarray) -> None:
    frames = reference[::12]
    generated = degrade(frames)
    assert ssim(generated, frames) == pytest.approx(np.mean([skimage_ssim(g, r) for g, r in zip(generated, frames)]), abs=1e-4)
    assert psnr(generated, frames) == pytest.approx(peak_signal_noise_ratio(frames, generated, data_range=255), abs=1e-4)


def test_masked_metrics_average_inside_the_mask_only() -> None:
    generated, reference = image_pairs()[2]
    mask = np.zeros(reference.shape[:2], bool)
    mask[3:40, 20:70] = True  # reaches into the 5-pixel border, where the SSIM window leaves the frame
    assert psnr(generated[None], reference[None], mask) == pytest.approx(
        peak_signal_noise_ratio(reference[mask], generated[mask], data_range=255), abs=1e-4
    )
    _, full_map = skimage_ssim(generated, reference, full=True)
    inside = mask.copy()
    inside[:5], inside[-5:], inside[:, :5], inside[:, -5:] = False, False, False, False
    assert ssim(generated[None], reference[None], mask) == pytest.approx(full_map.mean(axis=-1)[inside].mean(), abs=1e-4)
    everywhere = np.ones_like(mask)
    assert ssim(generated[None], reference[None], everywhere) == pytest.approx(ssim(generated[None], reference[None]), abs=1e-12)
    assert math.isnan(psnr(generated[None], reference[None], np.zeros_like(mask)))


def test_known_values() -> None:
    image = structured_image(4)
    video = np.stack([image, image[::-1]])
    assert psnr(video, video) == math.inf and ssim(video, video) == pytest.approx(1.0, abs=1e-12)
    base = (video.astype(np.int32) * 200 // 255).astype(np.uint8)  # room for the offset without clipping
    for k in (1, 5, 16):
        assert psnr(base + np.uint8(k), base) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(video, video[:1])


# --- region masks ------------------------------------------------------------------------------------------


def test_mouth_mask_holds_every_lip_and_mouth_interior_pixel(clip, reference: np.ndarray) -> None:
    keypoints, identity = clip
    mouth, face = mouth_mask(keypoints), face_mask(keypoints)
    mouth_colours = np.array([identity.lips, MOUTH_INSIDE, TEETH, TONGUE], np.uint8)
    painted = (reference[..., None, :] == mouth_colours).all(axis=-1).any(axis=-1) & face
    assert painted.sum() > 50 * keypoints.num_frames  # the test sees the mouth in every frame
    assert not (painted & ~mouth).any()
    assert (mouth & ~face).sum() == 0  # and the mouth lies inside the face region
    assert mouth.sum() < 0.25 * face.sum()


def test_hand_mask_holds_every_pixel_the_hands_paint(clip, reference: np.ndarray) -> None:
    keypoints, identity = clip
    handless = WholeBodyKeypoints(
        keypoints.body, keypoints.body_score, keypoints.hands, np.zeros_like(keypoints.hands_score), keypoints.face,
        keypoints.face_score, keypoints.image_size,
    )  # fmt: skip
    painted = (render_avatar(handless, identity) != reference).any(axis=-1)
    hands = hand_mask(keypoints)
    assert painted.sum() > 200 * keypoints.num_frames
    assert not (painted & ~hands).any()
    assert hands.sum() < 3 * painted.sum()  # a hand-sized region, not the whole frame
    assert not hand_mask(handless).any()  # points under the score threshold draw nothing


def test_face_mask_holds_the_landmarks_and_follows_the_scores(clip) -> None:
    keypoints, _ = clip
    face = face_mask(keypoints)
    columns, rows = np.round(keypoints.face * 256).astype(int).transpose(2, 0, 1)
    frames = np.repeat(np.arange(keypoints.num_frames)[:, None], 68, axis=1)
    assert face[frames, rows, columns].all()
    unsure = WholeBodyKeypoints(
        keypoints.body, np.zeros_like(keypoints.body_score), keypoints.hands, keypoints.hands_score, keypoints.face,
        np.full_like(keypoints.face_score, 0.29), keypoints.image_size,
    )  # fmt: skip
    masks = region_pixel_masks(unsure)
    assert not masks["face"].any() and not masks["mouth"].any() and masks["hands"].any()


# --- lip sync ------------------------------------------------------------------------------------------------


def test_mouth_opening_grows_with_the_lip_gap_for_every_skin_tone(clip) -> None:
    keypoints, _ = clip
    still = keypoints.select_frames([0] * 6)
    face = still.face.copy()
    face[:, [67, 66, 65]] = face[:, [61, 62, 63]]  # frame 0: the inner lips closed
    for frame, drop in enumerate((1, 2, 3, 4, 5), start=1):  # then the lower lip drops further each frame
        face[frame, 55:60, 1] += drop * 2.0 / 256
        face[frame, 65:68, 1] += drop * 2.0 / 256
    motion = with_face(still, face)
    for skin, _ in SKIN_TONES:
        opening = mouth_opening(render_avatar(motion, identity_with_skin(skin)), motion)
        assert opening[0] < 0.02 * opening[-1], (skin, opening)  # closed: only stray edge blends count
        assert (np.diff(opening) > 0).all(), (skin, opening)


def test_lip_sync_is_one_for_the_same_motion_and_high_for_an_imperfect_copy(clip, reference: np.ndarray) -> None:
    keypoints, _ = clip
    assert lip_sync(reference, reference, keypoints) == pytest.approx(1.0, abs=1e-12)
    assert lip_sync(degrade(reference), reference, keypoints) > 0.7


@pytest.mark.parametrize("skin", ["porcelain", "tan", "deep"])
def test_lip_sync_drops_for_a_shifted_or_frozen_mouth(clip, skin: str) -> None:
    keypoints, _ = clip
    identity = identity_with_skin(skin)
    reference = render_avatar(keypoints, identity)
    frames = np.arange(keypoints.num_frames)
    shifted = render_avatar(with_lip_shapes(keypoints, np.roll(frames, SHIFT_FRAMES)), identity)
    frozen = render_avatar(with_lip_shapes(keypoints, np.zeros_like(frames)), identity)  # the first frame's mouth
    assert lip_sync(degrade(reference), reference, keypoints) > 0.7
    assert lip_sync(shifted, reference, keypoints) < 0.4
    assert abs(lip_sync(frozen, reference, keypoints)) < 0.15


def test_a_constant_opening_scores_zero_with_a_warning(clip, reference: np.ndarray) -> None:
    keypoints, identity = clip
    erased = np.where(mouth_mask(keypoints)[..., None], np.uint8(identity.skin), reference)  # no mouth at all
    with pytest.warns(UserWarning, match="generated mouth opening is constant"):
        assert lip_sync(erased.astype(np.uint8), reference, keypoints) == 0.0
    with pytest.warns(UserWarning, match="constant"):
        assert concordance(np.ones(5), np.ones(5)) == 0.0
    # NaN frames (no mouth region) are left out; the rest is scored.
    series = np.array([0.1, np.nan, 0.3, 0.2, 0.5])
    assert concordance(series, series) == pytest.approx(1.0)
    assert concordance(series, 2 * series) == pytest.approx(2 * 2 / 5)  # Pearson 1, amplitudes 1 : 2


# --- flicker, clip metrics, aggregation ----------------------------------------------------------------------


def test_flicker_is_zero_when_tracking_and_high_for_per_frame_noise(reference: np.ndarray) -> None:
    video = (reference[:10].astype(np.int32) * 200 // 255 + 20).astype(np.uint8)
    assert flicker(video + np.uint8(7), video) == 0.0  # a constant error does not flicker
    alternating = video.astype(np.int32) + np.where(np.arange(10) % 2 == 0, 5, -5)[:, None, None, None]
    assert flicker(alternating.astype(np.uint8), video) == pytest.approx(10.0)
    sigma = 10.0
    noisy = video + np.random.default_rng(0).normal(0.0, sigma, video.shape)
    # The difference of two independent N(0, s^2) is N(0, 2 s^2), whose mean absolute value is 2 s / sqrt(pi).
    expected = 2 * sigma / math.sqrt(math.pi)
    assert flicker(np.round(noisy).astype(np.uint8), video) == pytest.approx(expected, rel=0.03)


def test_evaluate_clip_measures_each_region(clip, reference: np.ndarray) -> None:
    keypoints, identity = clip
    exact = evaluate_clip(reference, reference, keypoints)
    assert list(exact) == list(CLIP_METRICS)
    assert exact == {
        "psnr": math.inf, "ssim": pytest.approx(1.0), "face_psnr": math.inf, "mouth_psnr": math.inf,
        "hand_psnr": math.inf, "lip_sync": pytest.approx(1.0), "flicker": 0.0,
    }  # fmt: skip
    frozen = render_avatar(with_lip_shapes(keypoints, np.zeros(keypoints.num_frames, int)), identity)
    wrong_mouth = evaluate_clip(frozen, reference, keypoints)
    # The error is all in the mouth: the smaller the region around it, the larger its share of the region.
    assert wrong_mouth["mouth_psnr"] < wrong_mouth["face_psnr"] < wrong_mouth["psnr"] < wrong_mouth["hand_psnr"]
    assert wrong_mouth["lip_sync"] < 0.15
    # Blurring only the hands lowers the hand PSNR, not the face's.
    hands = hand_mask(keypoints) & ~face_mask(keypoints)
    blurred = np.where(hands[..., None], degrade(reference), reference)
    wrong_hands = evaluate_clip(blurred, reference, keypoints)
    assert wrong_hands["hand_psnr"] < wrong_hands["psnr"] < math.inf and wrong_hands["face_psnr"] == math.inf


def test_aggregate_averages_psnr_through_the_squared_error() -> None:
    clips = [
        {"psnr": math.inf, "hand_psnr": math.nan, "ssim": 1.0, "lip_sync": 1.0},
        {"psnr": 20.0, "hand_psnr": 30.0, "ssim": 0.5, "lip_sync": 0.0},
    ]
    mean = aggregate(clips)
    mse = (0.0 + 255**2 / 10 ** (20 / 10)) / 2
    assert mean["psnr"] == pytest.approx(10 * math.log10(255**2 / mse))  # 23.01 dB, not inf and not 20
    assert mean["hand_psnr"] == pytest.approx(30.0)  # the clip without hands is left out
    assert mean["ssim"] == pytest.approx(0.75) and mean["lip_sync"] == pytest.approx(0.5)
    assert aggregate([clips[0]])["psnr"] == math.inf and math.isnan(aggregate([clips[0]])["hand_psnr"])
    with pytest.raises(ValueError, match="metrics"):
        aggregate([clips[0], {"psnr": 1.0}])


# --- comparison grid -----------------------------------------------------------------------------------------


def test_comparison_grid_shows_each_row_at_the_chosen_frames(tmp_path, reference: np.ndarray) -> None:
    variant = degrade(reference)
    path = tmp_path / "grid.png"
    indices = [0, 24, 48]
    write_comparison_grid(path, {"ground truth": reference, "variant": variant}, indices, {"variant": "variant\n27.8 dB"})
    grid = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary left behind
    # Every tile is found exactly once, in its row and column order: ground truth above the variant.
    found = []
    for row, video in enumerate((reference, variant)):
        for column, index in enumerate(indices):
            scores = cv2.matchTemplate(grid, video[index], cv2.TM_SQDIFF)
            y, x = np.unravel_index(scores.argmin(), scores.shape)
            np.testing.assert_array_equal(grid[y : y + 256, x : x + 256], video[index])
            found.append((row, column, y, x))
    ys = sorted({y for _, _, y, _ in found})
    xs = sorted({x for _, _, _, x in found})
    assert len(ys) == 2 and len(xs) == 3
    assert all(ys[row] == y and xs[column] == x for row, column, y, x in found)
    panel = grid[ys[1] : ys[1] + 256, : xs[0]]
    assert (panel < 128).any()  # the label was drawn
    with pytest.raises(ValueError, match=".png"):
        write_comparison_grid(tmp_path / "grid.jpg", {"ground truth": reference}, indices)
    with pytest.raises(ValueError, match="outside"):
        write_comparison_grid(path, {"ground truth": reference}, [49])


# --- speed ---------------------------------------------------------------------------------------------------


def test_frames_per_second_times_only_the_repeats_under_the_thread_cap(monkeypatch) -> None:
    now = [0.0]
    calls = []
    monkeypatch.setattr(speed, "perf_counter", lambda: now[0])

    def generate() -> None:
        calls.append(torch.get_num_threads())
        now[0] += 0.5  # each call takes half a second of the fake clock

    before = torch.get_num_threads()
    fps = speed.frames_per_second(generate, frames=10, device="cpu", repeats=4, warmup=2, cpu_threads=1)
    assert fps == pytest.approx(10 * 4 / (4 * 0.5))  # the warm-up calls are not timed
    assert calls == [1] * 6 and torch.get_num_threads() == before


def test_frames_per_second_reads_the_clock_only_when_the_gpu_has_finished(monkeypatch) -> None:
    events = []
    monkeypatch.setattr(speed, "perf_counter", lambda: events.append("clock") or float(len(events)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(f"synchronize {device}"))
    speed.frames_per_second(lambda: events.append("generate"), frames=1, device="cuda:0", repeats=2, warmup=1)
    sync = "synchronize cuda:0"
    assert events == ["generate", sync, "clock", "generate", sync, "generate", sync, "clock"]


def test_thread_cap_is_restored_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with speed.torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="cpu_threads"):
        speed.frames_per_second(lambda: None, 1, "cuda", cpu_threads=2)


@pytest.mark.gpu
def test_frames_per_second_on_the_gpu() -> None:
    matrix = torch.randn(2048, 2048, device="cuda")
    calls = []

    def generate() -> None:
        calls.append(1)
        matrix @ matrix

    fps = speed.frames_per_second(generate, frames=1, device="cuda", repeats=3)
    assert calls == [1] * 4 and math.isfinite(fps) and fps > 0
