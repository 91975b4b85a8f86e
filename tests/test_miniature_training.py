"""The miniature's training from scratch: the mini preset and its model folder, pretrain_vae and pretrain
(losses fall on a fixed batch), run.time_limit_s (counted from the first step's end; stops, leaves a resumable
checkpoint), the global-only layout and the FFV1 dataset codec."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from iasa.attention.build import build_sparse_layout
from iasa.attention.config import SparseAttentionConfig
from iasa.attention.layout import without_regions
from iasa.attention.masks import dense_mask
from iasa.config import ConfigError, load_config
from iasa.pose.synthetic_speaker import synthetic_speaker
from iasa.synthetic.dataset import write_ffv1_mp4
from iasa.tensor_files import read_tensors
from iasa.train.cache import list_cached, read_clip
from iasa.train.checkpoint import complete_checkpoints
from iasa.train.config import VaePretrainConfig
from iasa.train.finetune import MODEL_FOLDER, POSE_GUIDER_FILE
from iasa.train.flow_matching import add_noise, flow_target
from iasa.train.model import PoseDiT, load_training_components
from iasa.train.model_folder import save_dit, save_text_encoder, save_vae
from iasa.train.tasks import main
from iasa.train.vae_pretrain import reconstruction_loss, run_vae_pretrain, sample_batch
from iasa.video.assembly import load_wan_components
from iasa.video.config import PoseDrivenModelConfig, WanModelConfig, architecture
from iasa.video.lora import load_pose_guider
from iasa.train.dataset import read_frames

CPU = ["model.device=cpu", "model.dtype=float32", "run.mixed_precision=fp32", "run.report_to=none"]
# VAE samples small enough for seconds per step on a CPU: 5 frames (the causal first frame and one group of 4) of
# 16 x 16 (two latent pixels a side).
SMALL_CLIPS = ["data.num_frames=5", "data.crop=16"]


def write_mini_folder(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    components = load_wan_components(WanModelConfig(model_size="mini", model_dir=None, dtype="float32", device="cpu"))
    folder.mkdir(parents=True)
    save_dit(components.dit, folder)
    save_vae(components.vae, folder)
    save_text_encoder(components.text_encoder, folder)
    return folder


def test_mini_preset_fits_20_mb_and_round_trips_through_the_loader(tmp_path: Path) -> None:
    arch = architecture("mini")
    assert arch.dim // arch.num_heads == 128 and not arch.image_input
    folder = write_mini_folder(tmp_path / "model")
    assert not list(folder.glob("*.pth"))
    config = WanModelConfig(model_size="mini", model_dir=str(folder), dtype="float32", device="cpu")
    loaded = load_wan_components(config)
    assert loaded.image_encoder is None and loaded.dit.has_image_input is False
    torch.manual_seed(0)
    random = load_wan_components(replace(config, model_dir=None))
    for part in ("dit", "text_encoder", "vae"):
        original, reloaded = getattr(random, part).state_dict(), getattr(loaded, part).state_dict()
        assert original.keys() == reloaded.keys()
        for key in original:  # written in fp16
            torch.testing.assert_close(reloaded[key], original[key].half().float(), rtol=0, atol=0, msg=key)
    shipped = [loaded.dit, loaded.vae, loaded.text_encoder, random.pose_guider]
    assert sum(2 * parameter.numel() for part in shipped for parameter in part.parameters()) <= 20e6


def test_without_regions_sees_every_token_of_the_selected_frames() -> None:
    keypoints = synthetic_speaker(num_frames=9, image_size=(64, 64), seed=3)
    layout = without_regions(build_sparse_layout(keypoints, SparseAttentionConfig(top_k=1, direction="both")))
    frames, tokens = layout.token_regions.shape
    frame_of = torch.arange(frames).repeat_interleave(tokens)
    expected = layout.frame_selection[frame_of[:, None], frame_of[None, :]] | (frame_of[:, None] == frame_of[None, :])
    assert torch.equal(dense_mask(layout).cpu().reshape(expected.shape), expected)
    configured = build_sparse_layout(keypoints, SparseAttentionConfig(top_k=1, direction="both", local_regions=False))
    assert torch.equal(configured.token_regions, layout.token_regions)


def test_ffv1_videos_read_back_exactly(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    write_ffv1_mp4(tmp_path / "clip.mp4", frames, 30.0)
    assert np.array_equal(read_frames(tmp_path / "clip.mp4", list(range(5))), frames)


def vae_config(dataset: Path, output: Path, *overrides: str) -> VaePretrainConfig:
    return load_config(VaePretrainConfig, "config/miniature/vae.yaml", [
        f"data.dataset_dir={dataset}", "model.model_size=tiny", *SMALL_CLIPS, "data.batch_size=2",
        "optim.warmup_steps=0", "optim.learning_rate=2e-3", f"run.output_dir={output}", "run.time_limit_s=null",
        *CPU, *overrides,
    ])  # fmt: skip


def test_pretrain_vae_lowers_the_reconstruction_loss_and_writes_a_model_folder(tmp_path: Path, make_dataset) -> None:
    dataset = make_dataset(tmp_path / "dataset", clips=1)
    config = vae_config(dataset, tmp_path / "vae", "run.max_steps=12")
    torch.manual_seed(config.run.seed)
    components = load_training_components(config.model, ("dit", "text_encoder", "vae"))
    from iasa.train.vae_pretrain import load_videos

    torch.manual_seed(123)
    batch = sample_batch(load_videos(config.data), config.data, torch.device("cpu"))
    vae = components.vae.float()
    with torch.no_grad():
        before = float(reconstruction_loss(vae, batch, config.loss)["total"])
    run_vae_pretrain(config, components)
    with torch.no_grad():
        after = float(reconstruction_loss(vae, batch, config.loss)["total"])
    assert after < 0.8 * before
    folder = tmp_path / "vae" / MODEL_FOLDER
    assert sorted(path.name for path in folder.iterdir()) == [
        "Wan2.1_VAE.safetensors", "diffusion_pytorch_model-00001-of-00001.safetensors",
        "models_t5_umt5-xxl-enc-bf16.safetensors",
    ]  # fmt: skip


def test_decoder_fine_tune_keeps_the_encoder_and_the_latents(tmp_path: Path, make_dataset) -> None:
    """train_encoder=false from a model folder: the encoder side is bit-identical afterwards (so are the latents
    every DiT was trained on), the decoder side moved, the folder's DiT is copied, and the loss fell."""
    dataset = make_dataset(tmp_path / "dataset", clips=1)
    source = tmp_path / "vae"
    scratch = vae_config(dataset, source, "run.max_steps=20", "model.model_size=mini")
    torch.manual_seed(0)  # the random networks the scratch run starts from
    run_vae_pretrain(scratch, load_training_components(scratch.model, ("dit", "text_encoder", "vae")))
    config = vae_config(dataset, tmp_path / "decoder", "run.max_steps=40", "optim.learning_rate=5e-4", "train_encoder=false",
                        "model.model_size=mini", f"model.model_dir={source / MODEL_FOLDER}", "data.num_frames=9")  # fmt: skip
    components = load_training_components(config.model, ("dit", "text_encoder", "vae"))
    vae = components.vae.float()
    before = {key: value.clone() for key, value in vae.model.state_dict().items()}
    from iasa.train.vae_pretrain import load_videos

    torch.manual_seed(5)  # 8 clips: the loss of one random crop moves too much from step to step to compare
    batch = sample_batch(load_videos(config.data), replace(config.data, batch_size=8), torch.device("cpu"))
    with torch.no_grad():
        latents = vae.model.encode(batch, vae.scale)
        loss_before = float(reconstruction_loss(vae, batch, config.loss)["total"])
    run_vae_pretrain(config, components)
    after = vae.model.state_dict()
    decoder_side = [key for key in after if key.startswith(("conv2.", "decoder."))]
    assert decoder_side and all(not torch.equal(after[key], before[key]) for key in decoder_side if key.endswith("weight"))
    assert all(torch.equal(after[key], before[key]) for key in after if key not in decoder_side)
    with torch.no_grad():
        assert torch.equal(vae.model.encode(batch, vae.scale), latents)
        assert float(reconstruction_loss(vae, batch, config.loss)["total"]) < loss_before
    def folder_dit(folder: Path) -> dict[str, torch.Tensor]:
        model = WanModelConfig(model_size="mini", model_dir=str(folder / MODEL_FOLDER), dtype="float32", device="cpu")
        return load_wan_components(model, ("dit",)).dit.state_dict()

    written, copied_from = folder_dit(tmp_path / "decoder"), folder_dit(source)
    assert written.keys() == copied_from.keys() and all(torch.equal(written[key], copied_from[key]) for key in written)


def test_decoder_fine_tune_needs_a_model_folder_and_scratch_training_refuses_one() -> None:
    with pytest.raises(ConfigError, match="model.model_dir"):
        load_config(VaePretrainConfig, "config/miniature/vae.yaml", ["train_encoder=false"])
    with pytest.raises(ConfigError, match="model.model_dir"):
        load_config(VaePretrainConfig, "config/miniature/vae.yaml", ["model.model_dir=outputs/x"])


def test_time_limit_stops_with_a_checkpoint_that_a_later_run_resumes(tmp_path: Path, make_dataset) -> None:
    dataset = make_dataset(tmp_path / "dataset", clips=1)
    output = tmp_path / "vae"
    argv = ["--config", "config/miniature/vae.yaml"]
    shared = [f"data.dataset_dir={dataset}", "model.model_size=tiny", *SMALL_CLIPS, "data.batch_size=1",
              f"run.output_dir={output}", *CPU]  # fmt: skip
    main([*argv, *shared, "run.max_steps=50", "run.time_limit_s=1e-6"])
    # The clock starts when the first step (the kernel compiles) ends: the second step is the last.
    assert [path.name for path in complete_checkpoints(output)] == ["step-00000002"]
    assert (output / MODEL_FOLDER / "Wan2.1_VAE.safetensors").is_file()
    main([*argv, *shared, "run.max_steps=3", "run.time_limit_s=null"])
    assert [path.name for path in complete_checkpoints(output)] == ["step-00000003"]
    state = (output / "checkpoints" / "step-00000003" / "state.json").read_text()
    assert '"step": 3' in state


def fixed_flow_loss(model: PoseDiT, cache: Path) -> float:
    batch = read_clip(cache, list_cached(cache)[0])
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(batch.latents.shape, generator=generator)
    sigma = 0.6
    with torch.no_grad():
        prediction = model(add_noise(batch.latents, noise, sigma), torch.tensor([1000 * sigma]), batch, None)
    return float(torch.nn.functional.mse_loss(prediction, flow_target(batch.latents, noise)))


def test_pretrain_lowers_the_flow_loss_and_writes_a_loadable_model_folder(tmp_path: Path, tiny_cache: Path) -> None:
    start = write_mini_folder(tmp_path / "start")
    output = tmp_path / "teacher"
    model_config = PoseDrivenModelConfig(model_size="mini", model_dir=str(start), unianimate_checkpoint=None,
                                         dtype="float32", device="cpu")  # fmt: skip

    def loaded(folder: Path, guider: Path | None) -> PoseDiT:
        torch.manual_seed(0)  # the pose guider's random start, as the run's (run.seed 0)
        components = load_training_components(replace(model_config, model_dir=str(folder)), ("dit", "pose_guider"))
        if guider is not None:
            load_pose_guider(guider, components.pose_guider)
        return PoseDiT(components.dit, components.pose_guider, torch.float32)

    before = fixed_flow_loss(loaded(start, None), tiny_cache)
    main(["--config", "config/miniature/teacher.yaml", f"cache_dir={tiny_cache}", f"model.model_dir={start}",
          f"run.output_dir={output}", "run.max_steps=8", "run.time_limit_s=null", "optim.warmup_steps=0",
          "optim.learning_rate=2e-3", "dropout.pose=0", "dropout.image=0", *CPU])  # fmt: skip
    after = fixed_flow_loss(loaded(output / MODEL_FOLDER, output / POSE_GUIDER_FILE), tiny_cache)
    assert after < 0.8 * before
    for name in ("Wan2.1_VAE.safetensors", "models_t5_umt5-xxl-enc-bf16.safetensors"):  # copied from the start
        assert (output / MODEL_FOLDER / name).read_bytes() == (start / name).read_bytes()

    # Continued in a later command (run_miniature.sh TEACHER_FROM): a step too small to move any weight starts from
    # the trained DiT and pose guider, not from a random guider.
    continued = tmp_path / "continued"
    main(["--config", "config/miniature/teacher.yaml", f"cache_dir={tiny_cache}", f"model.model_dir={output / MODEL_FOLDER}",
          f"pose_guider_init={output / POSE_GUIDER_FILE}", f"run.output_dir={continued}", "run.max_steps=1",
          "run.time_limit_s=null", "optim.warmup_steps=0", "optim.learning_rate=1e-12", *CPU])  # fmt: skip
    trained, resumed = (read_tensors(folder / POSE_GUIDER_FILE, what="pose guider") for folder in (output, continued))
    assert trained.keys() == resumed.keys()
    assert all(torch.allclose(trained[key], resumed[key], atol=1e-7) for key in trained)
    assert fixed_flow_loss(loaded(continued / MODEL_FOLDER, continued / POSE_GUIDER_FILE), tiny_cache) == pytest.approx(after, rel=1e-5)


def test_global_only_lora_stage_runs_on_a_mini_model_folder(tmp_path: Path, tiny_cache: Path) -> None:
    start = write_mini_folder(tmp_path / "model")
    output = tmp_path / "lora"
    main(["--config", "config/miniature/lora_global.yaml", f"cache_dir={tiny_cache}", f"model.model_dir={start}",
          "pose_guider_init=null", "local_regions=false", "attention.backend=reference",
          f"run.output_dir={output}", "run.max_steps=1", *CPU])  # fmt: skip
    assert (output / "lora.safetensors").is_file() and (output / POSE_GUIDER_FILE).is_file()
