"""Fit a TAE decoder (iasa.video.tae) to a VAE: from latents, reproduce the frames the VAE decodes from them.

taew2_1's weights fit Wan 2.1's latent space only; a video model with a VAE of its own (the miniature trains a
small Wan-layout VAE from scratch) needs its own tiny decoder. This distils one: a pixel loss (L1 or MSE)
between the TAE's frames (unclamped, so that the loss has a gradient everywhere) and the VAE's frames of the
same latents, with AdamW. The TAE's widths are the caller's choice (TaeArchitecture).

Two ways in: `train_tae_decoder`, a plain loop over given (latents, frames) pairs, and `run_tae_distill`, the
distill_tae task: every step VAE-encodes a batch of random clips of the dataset's videos (pretrain_vae's
sampling), VAE-decodes the latents (both without gradients) and trains the TAE on the pair, with the training
runtime's accelerator, checkpoints and time limit; it writes run.output_dir/tae.safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from diffsynth.models.wan_video_vae import WanVideoVAE
from torch.nn import functional as F
from tqdm.auto import tqdm

from iasa.config import validate_config
from iasa.train.config import TaeDistillConfig
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
from iasa.train.vae_pretrain import load_videos, move_vae_scale, sample_batch
from iasa.video.assembly import WanComponents
from iasa.video.config import WanModelConfig
from iasa.video.tae import TAE_ARCHITECTURES, TaeDecoder, save_tae_decoder

PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": F.l1_loss, "mse": F.mse_loss}
# What the distill_tae task writes into run.output_dir (iasa.video.tae.load_tae_decoder reads it).
TAE_FILE = "tae.safetensors"


def tae_pixel_loss(decoder: TaeDecoder, latents: torch.Tensor, frames: torch.Tensor, loss: str) -> torch.Tensor:
    """The pixel loss (a key of PIXEL_LOSSES) between the TAE's unclamped frames of latents (b, 16, T, h, w) and
    `frames` (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1], computed in float32."""
    predicted, _ = decoder(latents)
    return PIXEL_LOSSES[loss](predicted.float(), frames.to(predicted.device).float())


def vae_decoded_pairs(
    latent_batches: Iterable[torch.Tensor], vae_decode: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(latents (b, 16, T, h, w), the VAE's frames of them (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1]) for
    every batch of latents (e.g. VAE encodings of training clips); the VAE runs without gradients."""
    for latents in latent_batches:
        with torch.no_grad():
            frames = vae_decode(latents)
        yield latents, frames


@torch.no_grad()
def vae_latents_and_frames(vae: WanVideoVAE, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """clips (B, 3, F, H, W) in [-1, 1] -> (their latents (B, 16, T, H / 8, W / 8), normalised as the DiT sees
    them, and the VAE's decode of those latents (B, 3, F, H, W), clamped to [-1, 1] as inference decodes);
    vae.scale must be on the clips' device."""
    latents = vae.model.encode(clips, vae.scale)
    return latents, vae.model.decode(latents, vae.scale).clamp(-1, 1)


def train_tae_decoder(
    decoder: TaeDecoder,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    loss: str = "l1",
    progress: bool = True,
) -> list[float]:
    """Train `decoder` in place for `steps` AdamW steps, one (latents, frames) pair of `pairs` per step (see
    vae_decoded_pairs; frames on the [-1, 1] scale), and return the loss of every step. The decoder ends in
    eval mode with its parameters frozen, ready for iasa.video.tae.decode_clip / save_tae_decoder."""
    if loss not in PIXEL_LOSSES:
        raise ValueError(f"loss must be one of {sorted(PIXEL_LOSSES)}, got {loss!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    decoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=weight_decay)
    source, losses = iter(pairs), []
    for _ in tqdm(range(steps), desc="TAE decoder", disable=not progress):
        try:
            latents, frames = next(source)
        except StopIteration:
            raise ValueError(f"pairs ran out after {len(losses)} of {steps} steps") from None
        value = tae_pixel_loss(decoder, latents, frames, loss)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    decoder.eval().requires_grad_(False)
    return losses


# ------------------------------------------------------------------------------------------ distill_tae task
def run_tae_distill(config: TaeDistillConfig, components: WanComponents) -> Path:
    """Fit a TAE decoder of config.tae_architecture to the VAE of `components` (frozen), checkpointing every
    run.checkpoint_every steps; returns the run folder, which gets TAE_FILE."""
    validate_config(config)  # load_config did already; here for configs built in code
    run = config.run
    accelerator = make_accelerator(run)
    start_run(accelerator, config, run, project="iasa-distill-tae")
    device = accelerator.device
    vae = components.vae
    move_vae_scale(vae, device)
    # Built after start_run's seeding: the same initial weights on every process and in a resumed run.
    decoder = TaeDecoder(TAE_ARCHITECTURES[config.tae_architecture]).to(device).train().requires_grad_(True)
    named = {f"tae.{key}": parameter for key, parameter in decoder.named_parameters()}
    update = make_update(accelerator, list(named.values()), config.optim, config.optim.learning_rate, run)
    built_with = {"tae_architecture": config.tae_architecture}
    checkpointer = Checkpointer(accelerator, run, named, update.states(), config, built_with)
    seed_process(accelerator, run)
    start = checkpointer.resume()

    videos = load_videos(config.data)
    time_limit = TimeLimit(accelerator, run.time_limit_s)
    progress = tqdm(range(start, run.max_steps), initial=start, total=run.max_steps, desc="distill_tae", disable=not accelerator.is_main_process)
    for step in progress:
        loss = 0.0
        for _ in range(run.gradient_accumulation_steps):
            clips = sample_batch(videos, config.data, device)
            with autocast(accelerator, run):
                latents, frames = vae_latents_and_frames(vae, clips)
                value = tae_pixel_loss(decoder, latents, frames, config.loss)
            update.backward(value / run.gradient_accumulation_steps)
            loss += float(value.detach()) / run.gradient_accumulation_steps
        logs = {config.loss: loss, "grad_norm": update.step()}
        progress.set_postfix({config.loss: f"{loss:.4f}"})
        if end_step(step + 1, run, logs, accelerator, checkpointer, time_limit):
            break

    if accelerator.is_main_process:
        save_tae_decoder(decoder.eval().requires_grad_(False), Path(run.output_dir) / TAE_FILE)
    accelerator.end_training()
    return Path(run.output_dir)
