"""The pretrain_vae task: the Wan VAE from scratch on a dataset's videos (the miniature's first stage), or its
decoder alone fine-tuned from a model folder's VAE (train_encoder false: the latents stay as they are).

Every step reconstructs a batch of random clips (random video, start frame and square crop) through the VAE's
own causal encode and decode (diffsynth's VideoVAE_, the path inference runs), with an L1 + MSE pixel loss and a
term that keeps the normalised latents z = (mu - mean) / std, which the DiT is trained on, at unit RMS. The run
folder gets model/: a complete model folder in the Wan layout (iasa.train.model_folder) holding the trained VAE
and the DiT and text encoder with the random weights of run.seed, which data_process and pretrain read.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffsynth.models.wan_video_vae import WanVideoVAE
from einops import rearrange
from tqdm import tqdm

from iasa.config import validate_config
from iasa.train.config import VaeDataConfig, VaeLossConfig, VaePretrainConfig
from iasa.train.dataset import DatasetError, list_videos, read_frames, video_frame_count
from iasa.train.finetune import MODEL_FOLDER
from iasa.train.model_folder import save_dit, save_text_encoder, save_vae
from iasa.train.runtime import (
    Checkpointer,
    TimeLimit,
    autocast,
    end_step,
    make_accelerator,
    make_update,
    seed_process,
    start_run,
)
from iasa.video.assembly import WanComponents


# The VAE's parameters after the latents (VideoVAE_: encoder -> conv1 -> latents -> conv2 -> decoder).
DECODER_SIDE = ("conv2.", "decoder.")


def move_vae_scale(vae: WanVideoVAE, device: torch.device) -> None:
    """Put the latent normalisation (mean, 1 / std) the VAE's encode and decode apply on `device`: diffsynth
    builds it on the CPU."""
    vae.scale = [vae.mean.to(device), (1.0 / vae.std).to(device)]


def load_videos(data: VaeDataConfig) -> list[torch.Tensor]:
    """The first data.max_videos videos of data.dataset_dir as uint8 (F, H, W, 3) tensors (every frame)."""
    dataset_dir = Path(data.dataset_dir)
    names = list_videos(dataset_dir)[: data.max_videos]
    videos = []
    for name in tqdm(names, desc="reading videos"):
        path = dataset_dir / "videos" / f"{name}.mp4"
        frame_count, size = video_frame_count(path)
        if frame_count < data.num_frames or min(size) < data.crop:
            raise DatasetError(
                f"{path} has {frame_count} frames of {size}; the training samples are {data.num_frames} frames of "
                f"{data.crop}x{data.crop}: lower data.num_frames or data.crop"
            )
        videos.append(torch.from_numpy(read_frames(path, list(range(frame_count)))))
    return videos


def sample_batch(videos: list[torch.Tensor], data: VaeDataConfig, device: torch.device) -> torch.Tensor:
    """A batch (B, 3, F, crop, crop) in [-1, 1] of random clips: video, start frame and crop offsets drawn from
    the torch RNG (a resumed run draws what the uninterrupted one would have)."""
    clips = []
    for _ in range(data.batch_size):
        video = videos[int(torch.randint(len(videos), ()).item())]
        frames, height, width = video.shape[:3]
        start = int(torch.randint(frames - data.num_frames + 1, ()).item())
        top = int(torch.randint(height - data.crop + 1, ()).item())
        left = int(torch.randint(width - data.crop + 1, ()).item())
        clips.append(video[start : start + data.num_frames, top : top + data.crop, left : left + data.crop])
    batch = torch.stack(clips).to(device)
    return rearrange(batch, "b f h w c -> b c f h w").float() / 127.5 - 1


def reconstruction_loss(
    vae: WanVideoVAE, clips: torch.Tensor, loss: VaeLossConfig, train_encoder: bool = True
) -> dict[str, torch.Tensor]:
    """clips (B, 3, F, H, W) in [-1, 1] -> {"total", "l1", "mse", "latent_rms"} through the causal encode/decode
    (train_encoder False: the encode runs without gradients)."""
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        latents = vae.model.encode(clips, vae.scale)  # (B, 16, T, H/8, W/8), normalised as the DiT sees them
    decoded = vae.model.decode(latents, vae.scale).clamp(-1, 1)
    l1 = F.l1_loss(decoded.float(), clips.float())
    mse = F.mse_loss(decoded.float(), clips.float())
    rms = latents.float().pow(2).mean().sqrt()
    total = loss.l1_weight * l1 + loss.mse_weight * mse + loss.latent_scale_weight * (rms - 1) ** 2
    return {"total": total, "l1": l1, "mse": mse, "latent_rms": rms}


def run_vae_pretrain(config: VaePretrainConfig, components: WanComponents) -> Path:
    """Train the VAE of `components` (random weights: model.model_dir null), checkpointing every
    run.checkpoint_every steps; returns the run folder, whose model/ is the model folder."""
    validate_config(config)  # load_config did already; here for configs built in code
    run = config.run
    accelerator = make_accelerator(run)
    start_run(accelerator, config, run, project="iasa-pretrain-vae")
    device = accelerator.device
    vae = components.vae.float()
    move_vae_scale(vae, device)
    vae.model.train().requires_grad_(False)
    named = {
        f"vae.{key}": parameter
        for key, parameter in vae.model.named_parameters()
        if config.train_encoder or key.startswith(DECODER_SIDE)
    }
    for parameter in named.values():
        parameter.requires_grad_(True)
    update = make_update(accelerator, list(named.values()), config.optim, config.optim.learning_rate, run)
    built_with = {"model.model_size": config.model.model_size, "train_encoder": config.train_encoder}
    checkpointer = Checkpointer(accelerator, run, named, update.states(), config, built_with)
    seed_process(accelerator, run)
    start = checkpointer.resume()

    videos = load_videos(config.data)
    time_limit = TimeLimit(accelerator, run.time_limit_s)
    progress = tqdm(range(start, run.max_steps), initial=start, total=run.max_steps, desc="pretrain_vae", disable=not accelerator.is_main_process)
    for step in progress:
        totals: dict[str, float] = {}
        for _ in range(run.gradient_accumulation_steps):
            clips = sample_batch(videos, config.data, device)
            with autocast(accelerator, run):
                losses = reconstruction_loss(vae, clips, config.loss, config.train_encoder)
            update.backward(losses["total"] / run.gradient_accumulation_steps)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / run.gradient_accumulation_steps
        totals["grad_norm"] = update.step()
        progress.set_postfix(l1=f"{totals['l1']:.4f}", rms=f"{totals['latent_rms']:.2f}")
        if end_step(step + 1, run, totals, accelerator, checkpointer, time_limit):
            break

    folder = Path(run.output_dir) / MODEL_FOLDER
    if accelerator.is_main_process:
        vae.model.eval().requires_grad_(False)
        folder.mkdir(parents=True, exist_ok=True)
        save_vae(vae, folder)
        save_dit(components.dit, folder)
        save_text_encoder(components.text_encoder, folder)
    accelerator.end_training()
    return Path(run.output_dir)

