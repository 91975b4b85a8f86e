"""The pretrain_vae task: the Wan VAE from scratch on a dataset's videos (the miniature's first stage), or its
decoder alone fine-tuned from a model folder's VAE (train_encoder false: the latents stay as they are).

Every step reconstructs a batch of random clips (random video, start frame and square crop) through the VAE's
own causal encode and decode (diffsynth's VideoVAE_ modules, one latent frame per decoder call as its decode), with
an L1 + MSE pixel loss and a term that keeps the normalised latents z = (mu - mean) / std, which the DiT is trained
on, at unit RMS. With decoder_pieces N > 1 (the decoder alone) the clip's latent frames are decoded as N
consecutive pieces, truncated backpropagation through time: the decoder's causal caches go from one piece into the
next detached, and each piece's loss is backpropagated before the next piece is decoded, so a clip N times as long
costs the activation memory of one piece and trains the caches' states deep into a clip, where inference decodes
too. The run folder gets model/: a complete model folder in the Wan layout (iasa.train.model_folder) holding the
trained VAE and the DiT and text encoder with the random weights of run.seed, which data_process and pretrain read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

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
from iasa.video.latent_grid import latent_frame_groups
from iasa.video.vae_decode import WanDecoderState, decode_latent_frames


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


def latent_pieces(num_latent_frames: int, pieces: int) -> list[slice]:
    """The latent frames split into `pieces` consecutive runs, the first ones a frame longer where they do not
    divide evenly (33 in 4: 9, 8, 8, 8 latent frames = 33, 32, 32, 32 video frames)."""
    if not 1 <= pieces <= num_latent_frames:
        raise ValueError(f"{num_latent_frames} latent frames cannot be split into {pieces} pieces")
    bounds = [-(-index * num_latent_frames // pieces) for index in range(pieces + 1)]  # ceil(index T / pieces)
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def encode_clips(vae: WanVideoVAE, clips: torch.Tensor, train_encoder: bool) -> torch.Tensor:
    """clips (B, 3, F, H, W) in [-1, 1] -> latents (B, 16, T, H/8, W/8), normalised as the DiT sees them, through
    the causal encode (train_encoder False: without gradients)."""
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        return vae.model.encode(clips, vae.scale)


def piece_reconstruction_loss(
    vae: WanVideoVAE,
    clips: torch.Tensor,
    latents: torch.Tensor,
    piece: slice,
    state: WanDecoderState,
    loss: VaeLossConfig,
) -> tuple[dict[str, torch.Tensor], WanDecoderState]:
    """The losses of the latent frames `piece` of latents (B, 16, T, h, w), the encoding of clips (B, 3, F, H, W),
    decoded from `state` (the caches of the frames before; WanDecoderState() for piece 0) -> ({"total", "l1",
    "mse", "latent_rms"}, each times the piece's share of the F frames, so the pieces' sum is the whole clip's;
    the state after the piece). The decoder runs one latent frame per call, as diffsynth's decode."""
    groups = latent_frame_groups(clips.shape[2])
    frames = slice(groups[piece.start].start, groups[piece.stop - 1].stop)
    decoded, state = decode_latent_frames(vae, latents[:, :, piece], state, latent_frames_per_call=1)
    decoded, target = decoded.clamp(-1, 1).float(), clips[:, :, frames].float()
    share = decoded.shape[2] / clips.shape[2]
    l1 = F.l1_loss(decoded, target)
    mse = F.mse_loss(decoded, target)
    rms = latents.float().pow(2).mean().sqrt()
    total = loss.l1_weight * l1 + loss.mse_weight * mse + loss.latent_scale_weight * (rms - 1) ** 2
    return {"total": share * total, "l1": share * l1, "mse": share * mse, "latent_rms": share * rms}, state


def piece_losses(
    vae: WanVideoVAE,
    clips: torch.Tensor,
    latents: torch.Tensor,
    pieces: int,
    loss: VaeLossConfig,
    precision: Callable[[], ContextManager] = nullcontext,
) -> Iterator[dict[str, torch.Tensor]]:
    """Truncated backpropagation through time over one batch: the losses (piece_reconstruction_loss) of each of
    the `pieces` consecutive pieces of latents in turn, each decoded under precision() from the caches the piece
    before left, detached, so no gradient crosses a piece boundary. Backpropagate each piece's loss before asking
    for the next: its graph, the activation memory, then goes, and memory stays that of one piece."""
    state = WanDecoderState()
    for piece in latent_pieces(latents.shape[2], pieces):
        with precision():
            losses, state = piece_reconstruction_loss(vae, clips, latents, piece, state, loss)
        state = state.detached()
        yield losses


def reconstruction_loss(
    vae: WanVideoVAE, clips: torch.Tensor, loss: VaeLossConfig, train_encoder: bool = True
) -> dict[str, torch.Tensor]:
    """clips (B, 3, F, H, W) in [-1, 1] -> {"total", "l1", "mse", "latent_rms"} of the whole clip through the
    causal encode/decode (train_encoder False: the encode runs without gradients)."""
    latents = encode_clips(vae, clips, train_encoder)
    return next(piece_losses(vae, clips, latents, 1, loss))


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
                latents = encode_clips(vae, clips, config.train_encoder)
            pieces = piece_losses(vae, clips, latents, config.decoder_pieces, config.loss, lambda: autocast(accelerator, run))
            for losses in pieces:
                update.backward(losses["total"] / run.gradient_accumulation_steps)
                for name, value in losses.items():  # the pieces' shares sum to the whole clip's losses
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

