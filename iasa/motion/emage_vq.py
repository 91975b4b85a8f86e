"""The five EMAGE motion models: VQ-VAEs for face, upper body, hands and lower body, and the conv
autoencoder ``global`` that turns lower-body motion into root translation.

``EmageMotionDecoder`` turns per-part predictions of the audio model (codebook indices or latents)
into SMPL-X motion: axis-angle for 55 joints, 100 expressions, and the 337 features per frame
(55 x rot6d + translation + foot contact) that seed the next inference window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from iasa.motion.emage_config import NUM_JOINTS, EmageConfig, EmageVQConfig
from iasa.motion.emage_modules import MotionConvDecoder, MotionConvEncoder
from iasa.motion.rotation import axis_angle_to_rot6d, rot6d_to_axis_angle

# SMPL-X joint indices of each part. Upper: spine 1-3, neck, collars, head, shoulders, elbows,
# wrists. Lower: pelvis, hips, knees, ankles, feet. Joints 23 and 24 (eyes) are never predicted.
UPPER_JOINTS = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
LOWER_JOINTS = (0, 1, 2, 4, 5, 7, 8, 10, 11)
HAND_JOINTS = tuple(range(25, 55))
JAW_JOINT = 22
JAW_FEATURES = 6  # face features: jaw rot6d, then expressions
TRANSLATION_AND_CONTACT = 7  # lower features end with root translation (3) and foot contact (4)
TRANSLATION_VELOCITY = slice(54, 57)  # of the global model's output: root velocity x, y, z


class Codebook(nn.Module):
    """``embedding.weight``: (entries, dim) code vectors."""

    def __init__(self, entries: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(entries, dim)

    def nearest(self, latents: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (...,) index of the closest code vector (squared Euclidean distance)."""
        codes = self.embedding.weight
        distance = (latents**2).sum(-1, keepdim=True) + (codes**2).sum(-1) - 2 * latents @ codes.T
        return distance.argmin(-1)


class EmageVQVAE(nn.Module):
    """Conv encoder -> codebook -> conv decoder over (batch, frames, vae_test_dim) motion features."""

    def __init__(self, config: EmageVQConfig) -> None:
        super().__init__()
        self.encoder = MotionConvEncoder(config.vae_test_dim, config.vae_length, config.vae_layer)
        self.quantizer = Codebook(config.vae_codebook_size, config.vae_length)
        self.decoder = MotionConvDecoder(config.vae_length, config.vae_test_dim, config.vae_layer)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(batch, frames) codebook indices -> (batch, frames, vae_test_dim)."""
        return self.decoder(self.quantizer.embedding(indices))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(batch, frames, vae_length) latents, snapped to their nearest code vectors, -> features."""
        return self.decode_indices(self.quantizer.nearest(latents))


class EmageGlobalAE(nn.Module):
    """Plain conv autoencoder over lower-body features; its output carries the root velocity."""

    def __init__(self, config: EmageVQConfig) -> None:
        super().__init__()
        self.encoder = MotionConvEncoder(config.vae_test_dim, config.vae_length, config.vae_layer)
        self.decoder = MotionConvDecoder(config.vae_length, config.vae_test_dim, config.vae_layer)

    def forward(self, lower: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 61) -> (batch, frames, 61)."""
        return self.decoder(self.encoder(lower))


@dataclass
class DecodedMotion:
    """axis_angle (batch, frames, 55, 3); expressions (batch, frames, 100); seed_features
    (batch, frames, 337) = 55 x rot6d + translation + foot contact; lower_features (batch, frames, 61)."""

    axis_angle: torch.Tensor
    expressions: torch.Tensor
    seed_features: torch.Tensor
    lower_features: torch.Tensor


def part_to_axis_angle(rot6d_features: torch.Tensor) -> torch.Tensor:
    """(batch, frames, joints * 6) -> (batch, frames, joints, 3)."""
    return rot6d_to_axis_angle(rearrange(rot6d_features, "b t (j d) -> b t j d", d=6))


class EmageMotionDecoder(nn.Module):
    """The five motion models; ``parts[name]`` holds the weights of ``emage_vq/<name>``."""

    def __init__(self, config: EmageConfig) -> None:
        super().__init__()
        self.pose_fps = config.audio.pose_fps
        self.parts = nn.ModuleDict(
            {
                part: (EmageGlobalAE if part == "global" else EmageVQVAE)(vq_config)
                for part, vq_config in config.parts.items()
            }
        )

    def decode_part(self, part: str, prediction: torch.Tensor) -> torch.Tensor:
        """Integer (batch, frames) indices or float (batch, frames, dim) latents -> part features."""
        model: EmageVQVAE = self.parts[part]  # type: ignore[assignment]
        if prediction.dtype in (torch.int32, torch.int64):
            return model.decode_indices(prediction)
        return model.decode_latents(prediction)

    def decode(self, predictions: dict[str, torch.Tensor]) -> DecodedMotion:
        """Predictions for face, upper, hands and lower -> the whole body (see DecodedMotion)."""
        face = self.decode_part("face", predictions["face"])
        upper = self.decode_part("upper", predictions["upper"])
        hands = self.decode_part("hands", predictions["hands"])
        lower = self.decode_part("lower", predictions["lower"])
        batch, frames = face.shape[:2]

        axis_angle = face.new_zeros(batch, frames, NUM_JOINTS, 3)
        axis_angle[:, :, list(UPPER_JOINTS)] = part_to_axis_angle(upper)
        axis_angle[:, :, list(HAND_JOINTS)] = part_to_axis_angle(hands)
        axis_angle[:, :, list(LOWER_JOINTS)] = part_to_axis_angle(lower[..., :-TRANSLATION_AND_CONTACT])
        axis_angle[:, :, JAW_JOINT] = rot6d_to_axis_angle(face[..., :JAW_FEATURES])

        # The seed goes back through axis-angle so every joint (the unpredicted eyes included) is a
        # proper rotation, as in the official inference.
        rot6d = rearrange(axis_angle_to_rot6d(axis_angle), "b t j d -> b t (j d)")
        seed_features = torch.cat([rot6d, lower[..., -TRANSLATION_AND_CONTACT:]], dim=-1)
        return DecodedMotion(axis_angle, face[..., JAW_FEATURES:], seed_features, lower)

    def translation(self, lower_features: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 61) -> (batch, frames, 3) root translation starting at the origin.

        x and z integrate the predicted velocities (frame i moves by the velocity of frame i - 1);
        y is predicted as a height directly.
        """
        velocity = self.parts["global"](lower_features)[..., TRANSLATION_VELOCITY]
        step = velocity[:, :-1] / self.pose_fps
        position = torch.cat([torch.zeros_like(velocity[:, :1]), torch.cumsum(step, dim=1)], dim=1)
        return torch.stack([position[..., 0], velocity[..., 1], position[..., 2]], dim=-1)
