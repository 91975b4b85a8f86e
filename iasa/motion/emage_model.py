"""The EMAGE audio-to-motion transformer (``EmageAudioModel`` of PantoMatrix) as a plain nn.Module.

One call handles one window of ``pose_length`` frames. Inputs: waveform features of the window and
the motion of its first ``seed_frames`` frames (the tail of the previous window); every later frame
is the learned mask embedding. Outputs per part (face, upper, hands, lower): a regressed latent and
codebook logits, both (batch, frames, vae_codebook_size).

Flow: seed motion -> conv encoder -> "body hints"; face: a 4-layer transformer decoder whose queries
are position-encoded speaker embeddings and whose memory is [face audio, hints]; body: hints ->
1-layer self-attention -> 8-layer cross-attention to body audio -> per-part MLPs -> per-part
1-layer refinement attending to the other two parts -> logits.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from iasa.motion.emage_config import EmageAudioConfig
from iasa.motion.emage_modules import MLP, MotionConvEncoder, PeriodicPositionalEncoding, WavEncoder

ATTENTION_HEADS = 4
FEEDFORWARD_RATIO = 2  # feed-forward width / hidden size
SEED_ENCODER_LAYERS = 3
SEED_EXTRA_FEATURES = 7  # translation (3) + foot contact (4) after the 55 x rot6d pose
BODY_PARTS = ("upper", "hands", "lower")
CROSS_ATTENTION_LAYERS = 8
FACE_DECODER_LAYERS = 4


def transformer_decoder(prototype: nn.TransformerDecoderLayer, layers: int) -> nn.TransformerDecoder:
    """A stack of ``layers`` independent copies of ``prototype`` (nn.TransformerDecoder deep-copies)."""
    return nn.TransformerDecoder(prototype, num_layers=layers)


class EmageAudioModel(nn.Module):
    def __init__(self, config: EmageAudioConfig) -> None:
        super().__init__()
        self.config = config
        hidden, codes = config.hidden_size, config.vae_codebook_size
        seed_dims = config.pose_dims + SEED_EXTRA_FEATURES

        self.audio_encoder_face = WavEncoder(config.audio_f)
        self.audio_encoder_body = WavEncoder(config.audio_f)
        self.speaker_embedding_body = nn.Embedding(config.speaker_dims, hidden)
        self.speaker_embedding_face = nn.Embedding(config.speaker_dims, hidden)
        self.mask_embedding = nn.Parameter(torch.randn(1, 1, seed_dims) * hidden**-0.5)

        self.motion_encoder = MotionConvEncoder(seed_dims, config.motion_f, SEED_ENCODER_LAYERS)
        self.bodyhints_face = MLP(config.motion_f, hidden, config.motion_f)
        self.bodyhints_body = MLP(config.motion_f, hidden, config.motion_f)
        self.audio_body_motion_proj = nn.Linear(config.audio_f, hidden)
        self.moton_proj = nn.Linear(config.motion_f, hidden)  # (sic: the checkpoint key)
        self.position_embeddings = PeriodicPositionalEncoding(hidden, config.pose_length, config.pose_length)

        feedforward = hidden * FEEDFORWARD_RATIO
        # The two prototype layers are never run; they exist because the official model registers
        # them before cloning, so their weights are part of every checkpoint.
        self.transformer_en_layer = nn.TransformerEncoderLayer(
            hidden, ATTENTION_HEADS, dim_feedforward=feedforward, batch_first=True
        )
        self.motion_self_encoder = nn.TransformerEncoder(self.transformer_en_layer, num_layers=1, enable_nested_tensor=False)
        self.audio_motion_cross_attn_layer = nn.TransformerDecoderLayer(
            hidden, ATTENTION_HEADS, dim_feedforward=feedforward, batch_first=True
        )
        prototype = self.audio_motion_cross_attn_layer
        self.audio_motion_cross_attn = transformer_decoder(prototype, CROSS_ATTENTION_LAYERS)

        self.motion2latent_upper = MLP(hidden, hidden, hidden)
        self.motion2latent_hands = MLP(hidden, hidden, hidden)
        self.motion2latent_lower = MLP(hidden, hidden, hidden)
        self.body_motion_decoder_upper = transformer_decoder(prototype, 1)
        self.body_motion_decoder_hands = transformer_decoder(prototype, 1)
        self.body_motion_decoder_lower = transformer_decoder(prototype, 1)
        self.motion_out_proj_upper = nn.Linear(hidden, codes)
        self.motion_out_proj_hands = nn.Linear(hidden, codes)
        self.motion_out_proj_lower = nn.Linear(hidden, codes)
        self.motion_cls_upper = MLP(codes, hidden, codes)
        self.motion_cls_hands = MLP(codes, hidden, codes)
        self.motion_cls_lower = MLP(codes, hidden, codes)

        self.audio_face_motion_proj = nn.Linear(config.audio_f + config.motion_f, hidden)
        self.face_motion_decoder = transformer_decoder(prototype, FACE_DECODER_LAYERS)
        self.face_out_proj = nn.Linear(hidden, codes)
        self.face_cls = MLP(codes, hidden, codes)

    def encode_audio(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(windows, samples) waveform slices -> face and body features, each (windows, pose_length,
        audio_f). The encoders may yield a frame more than the window holds; the extra is dropped."""
        frames = self.config.pose_length
        face, body = self.audio_encoder_face(windows), self.audio_encoder_body(windows)
        if face.shape[1] < frames:
            raise ValueError(
                f"{windows.shape[1]} samples give {face.shape[1]} audio features, fewer than the "
                f"{frames} frames of a window"
            )
        return face[:, :frames], body[:, :frames]

    def masked_window(self, seed: torch.Tensor) -> torch.Tensor:
        """(batch, seed_frames, 337) seed motion -> (batch, pose_length, 337) window input."""
        masked = self.config.pose_length - seed.shape[1]
        mask = repeat(self.mask_embedding, "1 1 c -> b t c", b=seed.shape[0], t=masked)
        return torch.cat([seed, mask.to(seed.dtype)], dim=1)

    def forward(
        self, face_audio: torch.Tensor, body_audio: torch.Tensor, seed: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """face_audio, body_audio: (batch, frames, audio_f); seed: (batch, seed_frames, 337).

        Returns {part: (latent, logits)}, each (batch, frames, vae_codebook_size), for face, upper,
        hands and lower."""
        batch, frames = face_audio.shape[:2]
        speaker_body = repeat(self.speaker_embedding_body.weight[0], "c -> b t c", b=batch, t=frames)
        speaker_face = repeat(self.speaker_embedding_face.weight[0], "c -> b t c", b=batch, t=frames)

        hints = self.motion_encoder(self.masked_window(seed))
        hints_face, hints_body = self.bodyhints_face(hints), self.bodyhints_body(hints)

        face_memory = self.audio_face_motion_proj(torch.cat([face_audio, hints_face], dim=-1))
        face_hidden = self.face_motion_decoder(tgt=self.position_embeddings(speaker_face), memory=face_memory)
        face_latent = self.face_out_proj(face_hidden)
        outputs = {"face": (face_latent, self.face_cls(face_latent))}

        motion = self.position_embeddings(self.moton_proj(hints_body)) + speaker_body
        motion = self.motion_self_encoder(motion)
        motion = self.position_embeddings(motion + speaker_body)
        motion = motion + self.audio_motion_cross_attn(tgt=motion, memory=self.audio_body_motion_proj(body_audio))

        latents = {part: getattr(self, f"motion2latent_{part}")(motion) for part in BODY_PARTS}
        for part in BODY_PARTS:
            others = sum(latents[other] for other in BODY_PARTS if other != part)
            refine = getattr(self, f"body_motion_decoder_{part}")(tgt=latents[part] + speaker_body, memory=others)
            latent = getattr(self, f"motion_out_proj_{part}")(latents[part] + refine)
            outputs[part] = (latent, getattr(self, f"motion_cls_{part}")(latent))
        return outputs
