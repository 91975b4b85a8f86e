"""Streaming decode: latent frames to video frames as they arrive, with the Wan VAE or the TAE.

Both decoders are causal with an explicit state (iasa.video.vae_decode.wan_decode_step / WanDecoderState,
iasa.video.tae.decode_step / TaeDecoderState): latent frame 0 gives the reference frame, each further latent
frame 4 frames, the moment it is decoded, and any split of a clip into steps gives the full-clip video.
"""

from __future__ import annotations

import numpy as np
import torch
from diffsynth.models.wan_video_vae import WanVideoVAE
from einops import rearrange

from iasa.video.tae import TaeDecoder, TaeDecoderState, decode_step
from iasa.video.vae_decode import WanDecoderState, set_conv_memory_format, wan_decode_step


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, f, H, W) in [-1, 1] -> (f, H, W, 3) uint8 on the CPU (the rounding of VideoGenerator.generate)."""
    frames = ((video[0].float() + 1) * 127.5).round().clamp(0, 255)
    return rearrange(frames, "c f h w -> f h w c").to(torch.uint8).cpu().numpy()


class StreamDecoder:
    """decode(latents (1, 16, t, h, w)) -> the frames they complete, (f, H, W, 3) uint8 (f = 1 + 4 (t - 1) on the
    first call, 4 t after). The decoder's causal caches are this object's state, handed to the step functions
    and replaced by what they return."""

    def __init__(self, decoder: WanVideoVAE | TaeDecoder, memory_format: str = "contiguous") -> None:
        self.decoder, self.memory_format = decoder, memory_format
        if isinstance(decoder, TaeDecoder):
            self.state: WanDecoderState | TaeDecoderState = TaeDecoderState()
        else:
            set_conv_memory_format(decoder, memory_format)
            self.state = WanDecoderState()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return to_uint8_frames(self.decode_tensor(latents))

    @torch.no_grad()
    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """As decode, the frames (1, 3, f, H, W) in [-1, 1] on the decoder's device."""
        if isinstance(self.decoder, TaeDecoder):
            video, self.state = decode_step(self.decoder, latents, self.state)
        else:
            video, self.state = wan_decode_step(self.decoder, latents, self.state, self.memory_format)
        return video
