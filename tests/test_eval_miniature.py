"""scripts/eval_miniature.py's evaluation (iasa.eval.miniature) on tiny stage folders: the rows of
miniature.json, the grid, the density of the layout used, and the error for a missing stage file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iasa.attention import build_sparse_layout, density_statistics
from iasa.config import load_config
from iasa.eval.miniature import ROW_KEYS, MiniatureEvalConfig, MiniatureFilesError, load_held_out_clip, run_evaluation
from iasa.eval.video_metrics import CLIP_METRICS
from iasa.synthetic.avatar import render_avatar
from iasa.synthetic.dataset import identity_of_clip
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.attention import SparseAttentionConfig
from miniature_runs import FRAMES, SIZE, tiny_eval_overrides, write_held_out_split, write_stage_folders

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
# The tiny random model's rows on the CPU (torch 2.14.1, float32), pinned to 0.05 dB.
PINNED_PSNR = {"teacher": 11.2469, "student": 11.2483}


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("miniature")
    write_held_out_split(root / "data")
    write_stage_folders(root / "runs")
    return root / "data", root / "runs"


@pytest.fixture(scope="module")
def evaluated(miniature, tmp_path_factory) -> tuple[dict, Path]:
    dataset, runs = miniature
    out = tmp_path_factory.mktemp("results")
    config = load_config(MiniatureEvalConfig, None, tiny_eval_overrides(dataset, runs, out))
    return run_evaluation(config, progress=False), out


def test_rows_hold_every_metric_of_every_variant(evaluated):
    payload, out = evaluated
    assert json.loads((out / "miniature.json").read_text()) == payload
    assert [row["variant"] for row in payload["rows"]] == ["teacher", "student"]
    for row in payload["rows"]:
        assert list(row) == list(ROW_KEYS)
        assert all(row[key] is None or math.isfinite(row[key]) for key in CLIP_METRICS)
        assert row["fps_gpu"] is None and row["fps_cpu"] > 0  # no CUDA here
        assert row["psnr"] == pytest.approx(PINNED_PSNR[row["variant"]], abs=0.05)
    teacher, student = payload["rows"]
    assert (teacher["steps"], teacher["attention"], teacher["density"]) == (2, "dense", 1.0)
    assert (student["steps"], student["attention"]) == (1, "iasa/past/global+local")
    assert payload["gpu"] is None and payload["cpu"]["threads"] == 1 and payload["dataset"]["clips"] == 2
    assert "fp8_vs_bf16" not in payload  # CUDA only


def test_student_density_is_that_of_the_clip_layouts(evaluated, miniature):
    """FRAMES frames fit one window: the density is the token density of each clip's one layout, averaged."""
    payload, _ = evaluated
    dataset, _ = miniature
    names = json.loads((dataset / "heldout" / "manifest.json").read_text())["clips"]
    rule = SparseAttentionConfig(direction="past")
    densities = []
    for name in names:
        keypoints = WholeBodyKeypoints.load(dataset / "heldout" / "keypoints" / f"{name}.npz")
        densities.append(density_statistics(build_sparse_layout(keypoints, rule))["token_density"])
    assert 0 < payload["rows"][1]["density"] < 1
    assert payload["rows"][1]["density"] == pytest.approx(np.mean(densities), abs=1e-9)


def test_grid_shows_the_ground_truth_above_each_variant(evaluated, miniature):
    _, out = evaluated
    dataset, _ = miniature
    grid = cv2.cvtColor(cv2.imread(str(out / "grid.png")), cv2.COLOR_BGR2RGB)
    name = json.loads((dataset / "heldout" / "manifest.json").read_text())["clips"]
    clip = load_held_out_clip(dataset, next(iter(name)))
    truth = render_avatar(clip.keypoints, identity_of_clip(dataset / "heldout", clip.name))
    np.testing.assert_array_equal(clip.truth, truth)
    # The last tile of the first row (ground truth, last frame) appears verbatim in the grid.
    last = truth[FRAMES - 1]
    hits = [
        (top, left)
        for top in range(grid.shape[0] - SIZE + 1)
        for left in range(grid.shape[1] - SIZE + 1)
        if np.array_equal(grid[top, left], last[0, 0]) and np.array_equal(grid[top : top + SIZE, left : left + SIZE], last)
    ]
    assert hits, "the ground truth's last frame is not in the grid"
    assert grid.shape[0] >= 3 * SIZE  # ground truth + two variants


def test_a_missing_stage_file_names_the_file_and_its_stage(miniature, tmp_path):
    dataset, runs = miniature
    overrides = tiny_eval_overrides(dataset, tmp_path / "runs", tmp_path)
    (tmp_path / "runs" / "teacher").mkdir(parents=True)
    (tmp_path / "runs" / "teacher" / "model").symlink_to(runs / "teacher" / "model")
    config = load_config(MiniatureEvalConfig, None, overrides)
    expected = r"runs/teacher/pose_guider\.safetensors does not exist: it is written by the miniature's 'teacher' stage"
    with pytest.raises(MiniatureFilesError, match=expected):
        run_evaluation(config, progress=False)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_miniature.py"), "--no-progress", *overrides],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "'teacher' stage" in result.stderr


def test_table_script_prints_one_markdown_row_per_variant(evaluated):
    payload, out = evaluated
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "miniature_table.py"), str(out / "miniature.json")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| variant | steps | attention | density | PSNR (dB) |") and set(lines[1]) == {"|", "-"}
    teacher = lines[2].split(" | ")
    assert teacher[0] == "| teacher" and teacher[4] == f"{payload['rows'][0]['psnr']:.2f}" and teacher[-2] == "-"  # no GPU
    assert lines[3].startswith("| student | 1 | iasa/past/global+local |")
    still = lines[4].split(" | ")
    assert still[:4] == ["| baseline: reference_still", "-", "-", "-"] and still[4] == f"{payload['baselines'][0]['psnr']:.2f}"
    assert lines[5].startswith("| baseline: vae_round_trip | - | - | - |")


@pytest.mark.gpu
def test_on_cuda_rows_are_timed_and_the_student_is_compared_at_fp8_and_with_the_tae(miniature, tmp_path):
    """The CUDA-only parts: fps_gpu of every row, the student at FP8 against bf16, TAE- against VAE-decoded."""
    from iasa.video.tae import TAE_ARCHITECTURES, TaeDecoder, save_tae_decoder

    dataset, runs = miniature
    tae = tmp_path / "tae.safetensors"
    save_tae_decoder(TaeDecoder(TAE_ARCHITECTURES["tiny"]), tae)
    overrides = [*tiny_eval_overrides(dataset, runs, tmp_path), "device=cuda", "gpu_repeats=1", f"tae_checkpoint={tae}"]
    payload = run_evaluation(load_config(MiniatureEvalConfig, None, overrides), progress=False)
    assert payload["gpu"] and all(row["fps_gpu"] > 0 and row["fps_cpu"] > 0 for row in payload["rows"])
    fp8, tae_row = payload["fp8_vs_bf16"], payload["tae_vs_vae"]
    assert fp8["variant"] == tae_row["variant"] == "student"
    assert 20 < fp8["psnr"] < 100 and fp8["fps_gpu"] > 0  # FP8 rounding changes the video a little
    assert tae_row["psnr"] is not None and tae_row["ssim"] < 1 and tae_row["fps_gpu"] > 0  # a random TAE: another video


def _psnr_through_mean_mse(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """PSNR over clips as the table aggregates it: the clips' mean squared errors averaged, then to dB."""
    mse = np.mean([np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) for a, b in pairs])
    return 10 * math.log10(255**2 / mse)


def test_baselines_are_the_still_reference_and_the_vae_round_trip(evaluated, miniature, tmp_path, run_script):
    """reference_still: each clip's frame 0 repeated; vae_round_trip: diffsynth's own encode and decode of the
    ground truth (not the project's per-latent-frame decoder). --baselines-only writes the same rows alone."""
    from iasa.eval.miniature import evaluated_clips, variant_inference_config
    from iasa.video.pipeline import VideoGenerator

    payload, out = evaluated
    dataset, runs = miniature
    config = load_config(MiniatureEvalConfig, None, tiny_eval_overrides(dataset, runs, out))
    clips = evaluated_clips(config, progress=False)
    still, round_trip = payload["baselines"]
    assert (still["baseline"], round_trip["baseline"]) == ("reference_still", "vae_round_trip")
    assert set(still) == set(round_trip) == {"baseline", *CLIP_METRICS}
    held = [(np.repeat(clip.truth[:1], len(clip.truth), axis=0), clip.truth) for clip in clips]
    assert still["psnr"] == pytest.approx(_psnr_through_mean_mse(held), abs=1e-6)

    student = next(variant for variant in config.variants if variant.name == "student")
    inference = variant_inference_config(config, student)
    vae = VideoGenerator.from_config(inference.model, inference.attention, inference.long_video, inference.speed).components.vae
    decoded = []
    for clip in clips:
        video = torch.from_numpy(clip.truth).permute(3, 0, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            frames = vae.decode(vae.encode([video], device="cpu"), device="cpu")[0]
        frames = ((frames.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
        decoded.append((frames, clip.truth))
    assert round_trip["psnr"] == pytest.approx(_psnr_through_mean_mse(decoded), abs=0.01)

    only = tmp_path / "baselines.json"
    overrides = [*tiny_eval_overrides(dataset, runs, out), f"out={only}"]
    run_script("eval_miniature.py", "--baselines-only", "--no-progress", *overrides)
    assert json.loads(only.read_text())["baselines"] == payload["baselines"]
