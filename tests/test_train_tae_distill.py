"""iasa.train.tae_distill: train_tae_decoder fits a tiny TAE decoder to a tiny random Wan VAE's decoded frames, and
the distill_tae task (config/miniature/tae.yaml through the training command line's main) fits one to the VAE of a
mini model folder, writes it in the taew2_1 layout that the real TAE loader reads, and resumes exactly."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from einops import rearrange
from safetensors import safe_open

from iasa.config import ConfigError, load_config
from iasa.train.checkpoint import complete_checkpoints
from iasa.train.config import TaeDistillConfig
from iasa.train.dataset import read_frames
from iasa.train.model import load_training_components
from iasa.train.tae_distill import (
    TAE_FILE,
    tae_pixel_loss,
    train_tae_decoder,
    vae_decoded_pairs,
    vae_latents_and_frames,
)
from iasa.train.tasks import main
from iasa.train.vae_pretrain import load_videos, sample_batch
from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES, WanModelConfig
from iasa.video.model_files import ModelFilesError
from iasa.video.tae import TAE_ARCHITECTURES, TaeArchitecture, TaeDecoder, decode_clip, load_tae_decoder
from iasa.video.vae_decode import decode_video
from test_miniature_training import write_mini_folder

STUDENT = TaeArchitecture(decoder_channels=(32, 16, 16, 16), encoder_channels=8)

# Hundreds of steps on tensors this small: more threads only add synchronisation (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_distilled_decoder_reproduces_the_vae_frames_far_better_than_at_the_start():
    torch.manual_seed(0)
    vae = build_random("vae", ARCHITECTURES["tiny"], torch.device("cpu"), torch.float32)
    latents = [torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))]
    pairs = list(vae_decoded_pairs(latents, lambda z: decode_video(vae, z)))
    frames = pairs[0][1]
    assert frames.shape == (1, 3, 5, 32, 32)
    # The best prediction that ignores the latents' spatial content: every pixel's mean over the clip.
    mean_frame_l1 = (frames - frames.mean(dim=2, keepdim=True)).abs().mean().item()
    torch.manual_seed(0)
    student = TaeDecoder(STUDENT)
    losses = train_tae_decoder(student, itertools.cycle(pairs), steps=200, learning_rate=3e-3, progress=False)
    final = sum(losses[-10:]) / 10
    assert len(losses) == 200
    assert final < losses[0] / 5
    assert final < 0.9 * mean_frame_l1
    # Ready for inference: frozen, eval mode, and its clamped decode is as close as the training loss says.
    assert not student.training and not any(p.requires_grad for p in student.parameters())
    assert (decode_clip(student, latents[0]) - frames).abs().mean().item() <= final * 1.05


def test_running_out_of_pairs_and_an_unknown_loss_are_errors():
    student = TaeDecoder(STUDENT)
    pairs = [(torch.randn(1, 16, 1, 2, 2), torch.zeros(1, 3, 1, 16, 16))]
    with pytest.raises(ValueError, match="ran out after 1 of 3 steps"):
        train_tae_decoder(student, pairs, steps=3, progress=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_tae_decoder(student, pairs, steps=1, loss="huber", progress=False)


# ------------------------------------------------------------------------------------------ distill_tae task
# The task on the CPU, the miniature's VAE (random weights, written as a model folder) and the shipped config:
# clips of 5 frames (two latent frames) cropped to 24 x 24.
TASK_OVERRIDES = [
    "model.device=cpu", "run.mixed_precision=fp32", "run.report_to=none", "run.time_limit_s=null",
    "data.num_frames=5", "data.crop=24", "data.batch_size=2", "optim.warmup_steps=0", "optim.learning_rate=3e-3",
]  # fmt: skip
TASK_STEPS = 100


def distill_tae(dataset: Path, model_folder: Path, output: Path, *overrides: str) -> Path:
    return main(["--config", "config/miniature/tae.yaml", f"data.dataset_dir={dataset}", f"model.model_dir={model_folder}",
                 f"run.output_dir={output}", *TASK_OVERRIDES, *overrides])  # fmt: skip


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, make_dataset, one_thread) -> dict[str, Path]:
    """A distill_tae run of TASK_STEPS steps through the command line's main, from the shipped YAML."""
    root = tmp_path_factory.mktemp("distill_tae")
    files = {"dataset": make_dataset(root / "dataset", clips=2), "model": write_mini_folder(root / "model")}
    files["run"] = distill_tae(files["dataset"], files["model"], root / "tae", f"run.max_steps={TASK_STEPS}")
    return files


def mini_vae(model_folder: Path):
    config = WanModelConfig(model_size="mini", model_dir=str(model_folder), dtype="float32", device="cpu")
    return load_training_components(config, ("vae",)).vae


def test_distill_tae_writes_the_taew2_1_layout_and_lowers_the_loss_on_a_fixed_batch(distilled) -> None:
    path = distilled["run"] / TAE_FILE
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    mini = TAE_ARCHITECTURES["mini"]
    assert keys == set(TaeDecoder(mini).state_dict()) and all(key.startswith("decoder.") for key in keys)
    trained = load_tae_decoder(path)  # the loader speed.decoder=tae runs: strict keys and shapes, widths from the file
    assert trained.arch.decoder_channels == mini.decoder_channels
    config = load_config(TaeDistillConfig, "config/miniature/tae.yaml", [f"data.dataset_dir={distilled['dataset']}", *TASK_OVERRIDES])
    torch.manual_seed(123)
    clips = sample_batch(load_videos(config.data), config.data, torch.device("cpu"))
    latents, frames = vae_latents_and_frames(mini_vae(distilled["model"]), clips)
    torch.manual_seed(0)  # the run's initial weights (run.seed 0)
    initial = TaeDecoder(mini)
    with torch.no_grad():
        before, after = (tae_pixel_loss(decoder, latents, frames, "l1").item() for decoder in (initial, trained))
    assert after < 0.3 * before


def test_the_distilled_tae_decodes_whole_frames_close_to_the_vae(distilled) -> None:
    """A clip's full 48 x 64 frames (training saw 24 x 24 crops), through decode_clip as inference decodes."""
    video = torch.from_numpy(read_frames(distilled["dataset"] / "videos" / "clip1.mp4", list(range(5))))
    clip = rearrange(video, "f h w c -> 1 c f h w").float() / 127.5 - 1
    latents, frames = vae_latents_and_frames(mini_vae(distilled["model"]), clip)
    assert latents.shape == (1, 16, 2, 6, 8) and frames.shape == (1, 3, 5, 48, 64)

    def error(decoder: TaeDecoder) -> float:
        return (decode_clip(decoder, latents) - frames).abs().mean().item()

    # The best frames that ignore the latents: every colour channel's mean over the clip.
    channel_mean_error = (frames - frames.mean(dim=(2, 3, 4), keepdim=True)).abs().mean().item()
    torch.manual_seed(0)
    random = TaeDecoder(TAE_ARCHITECTURES["mini"]).eval()
    trained = error(load_tae_decoder(distilled["run"] / TAE_FILE))
    assert trained < 0.85 * channel_mean_error and trained < 0.3 * error(random)


def test_an_interrupted_distill_tae_resumes_to_the_uninterrupted_weights(tmp_path: Path, make_dataset) -> None:
    dataset, model_folder = make_dataset(tmp_path / "dataset", clips=1), write_mini_folder(tmp_path / "model")
    whole = distill_tae(dataset, model_folder, tmp_path / "whole", "run.max_steps=4")
    halfway = (distill_tae(dataset, model_folder, tmp_path / "split", "run.max_steps=2") / TAE_FILE).read_bytes()
    split = distill_tae(dataset, model_folder, tmp_path / "split", "run.max_steps=4")
    assert [path.name for path in complete_checkpoints(split)] == ["step-00000004"]
    assert (split / TAE_FILE).read_bytes() == (whole / TAE_FILE).read_bytes() != halfway


def test_a_missing_model_folder_and_an_unknown_architecture_are_one_line_errors(tmp_path: Path) -> None:
    dataset, absent = tmp_path / "dataset", tmp_path / "no_model"
    with pytest.raises(ModelFilesError, match=f"model folder {absent} \\(model.model_dir\\) does not exist") as error:
        distill_tae(dataset, absent, tmp_path / "tae")
    assert "\n" not in str(error.value) and "teacher/model" in str(error.value)
    with pytest.raises(ConfigError, match="tae_architecture") as error:
        distill_tae(dataset, absent, tmp_path / "tae", "tae_architecture=huge")
    assert "'mini'" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="bad value loss="):
        distill_tae(dataset, absent, tmp_path / "tae", "loss=huber")
    with pytest.raises(ConfigError, match="bad value model.model_dir=.*the model folder holding the VAE"):
        distill_tae(dataset, absent, tmp_path / "tae", "model.model_dir=null")
