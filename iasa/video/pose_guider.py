"""UniAnimate's pose guider, with the key names of UniAnimate-DiT checkpoints.

It has two nets: ``dwpose_embedding`` maps a pose video to one feature per DiT token, added to the patch
embeddings; ``randomref_embedding_pose`` maps the reference frame's pose image to the 20 channels of the I2V
condition y, added to y at every latent frame. Both take pose images scaled to [0, 1].
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from iasa.video.config import CONDITION_CHANNELS

# UniAnimate repeats the first pose frame this often in front, so 81 frames (4n + 1) become 84 = 4 x 21 and
# the guider's two temporal stride-2 convolutions give one feature frame per latent frame.
LEADING_POSE_REPEATS = 3


def _pose_video_embedding(hidden: int, out_dim: int) -> nn.Sequential:
    """(b, 3, 4T, H, W) -> (b, out_dim, T, H/16, W/16): three full-resolution 3D convs, then spatial
    stride 2, two space-time stride 2, and a (1, 2, 2) patchify to the DiT width."""

    def conv(stride: tuple[int, int, int], in_channels: int = hidden) -> nn.Conv3d:
        return nn.Conv3d(in_channels, hidden, 3, stride=stride, padding=1)

    return nn.Sequential(
        conv((1, 1, 1), in_channels=3), nn.SiLU(),
        conv((1, 1, 1)), nn.SiLU(),
        conv((1, 1, 1)), nn.SiLU(),
        conv((1, 2, 2)), nn.SiLU(),
        conv((2, 2, 2)), nn.SiLU(),
        conv((2, 2, 2)), nn.SiLU(),
        nn.Conv3d(hidden, out_dim, (1, 2, 2), stride=(1, 2, 2)),
    )  # fmt: skip


def _reference_pose_embedding(hidden: int) -> nn.Sequential:
    """(b, 3, H, W) -> (b, 20, H/8, W/8): three full-resolution convs, then three stride-2 convs."""

    def conv(stride: int, in_channels: int = hidden, out_channels: int = hidden) -> nn.Conv2d:
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)

    return nn.Sequential(
        conv(1, in_channels=3), nn.SiLU(),
        conv(1), nn.SiLU(),
        conv(1), nn.SiLU(),
        conv(2), nn.SiLU(),
        conv(2), nn.SiLU(),
        conv(2, out_channels=CONDITION_CHANNELS),
    )  # fmt: skip


class PoseGuider(nn.Module):
    """UniAnimate's pose guider, both nets: keys ``dwpose_embedding.*`` and ``randomref_embedding_pose.*``."""

    def __init__(self, dit_dim: int, hidden_channels: int = 16) -> None:
        super().__init__()
        self.dwpose_embedding = _pose_video_embedding(hidden_channels, dit_dim)
        self.randomref_embedding_pose = _reference_pose_embedding(hidden_channels)

    def pose_features(self, pose_video: torch.Tensor) -> torch.Tensor:
        """pose_video (b, 3, F, H, W) in [0, 1], F = 4n + 1 -> features (b, dit_dim, n + 1, H/16, W/16)."""
        leading = repeat(pose_video[:, :, :1], "b c 1 h w -> b c r h w", r=LEADING_POSE_REPEATS)
        return self.dwpose_embedding(torch.cat([leading, pose_video], dim=2))

    def reference_condition(self, reference_pose: torch.Tensor) -> torch.Tensor:
        """reference_pose (b, 3, H, W) in [0, 1] -> (b, 20, 1, H/8, W/8), broadcast over latent frames of y."""
        return rearrange(self.randomref_embedding_pose(reference_pose), "b c h w -> b c 1 h w")
