"""Fit a TAE decoder (iasa.video.tae) to a VAE: from latents, reproduce the frames the VAE decodes from them.

taew2_1's weights fit Wan 2.1's latent space only; a video model with a VAE of its own (the miniature trains a
small Wan-layout VAE from scratch) needs its own tiny decoder. This distils one: a pixel loss (L1 or MSE)
between the TAE's frames (unclamped, so that the loss has a gradient everywhere) and the VAE's frames of the
same latents, with AdamW. The TAE's widths are the caller's choice (TaeArchitecture).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from iasa.video.tae import TaeDecoder

PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": F.l1_loss, "mse": F.mse_loss}


def vae_decoded_pairs(
    latent_batches: Iterable[torch.Tensor], vae_decode: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(latents (b, 16, T, h, w), the VAE's frames of them (b, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1]) for
    every batch of latents (e.g. VAE encodings of training clips); the VAE runs without gradients."""
    for latents in latent_batches:
        with torch.no_grad():
            frames = vae_decode(latents)
        yield latents, frames


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
    pixel_loss = PIXEL_LOSSES[loss]
    decoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=weight_decay)
    parameter = next(decoder.parameters())
    source, losses = iter(pairs), []
    for _ in tqdm(range(steps), desc="TAE decoder", disable=not progress):
        try:
            latents, frames = next(source)
        except StopIteration:
            raise ValueError(f"pairs ran out after {len(losses)} of {steps} steps") from None
        predicted, _ = decoder(latents)
        value = pixel_loss(predicted, frames.to(device=parameter.device, dtype=parameter.dtype))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    decoder.eval().requires_grad_(False)
    return losses
