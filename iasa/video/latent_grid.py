"""How the Wan video model maps a clip's frames and pixels to latent frames, latent cells and tokens.

The Wan VAE keeps video frame 0 as latent frame 0 on its own and compresses every following group of
4 video frames into one latent frame, so a clip must have 4n + 1 frames (81 -> 21); in space it maps
8 x 8 pixels to one latent cell, and the DiT patchifies 2 x 2 cells into one token (16 x 16 pixels).
Nothing heavy is imported here: iasa/attention reads the frame grouping from this module.
"""

from __future__ import annotations

# Video frames per latent frame after the first (temporal stride of the Wan VAE).
TEMPORAL_STRIDE = 4
# Pixels per latent cell side (Wan VAE), latent cells per token side (the DiT's patch), pixels per token side.
VAE_STRIDE = 8
PATCH_SIZE = 2
TOKEN_STRIDE = VAE_STRIDE * PATCH_SIZE


def num_latent_frames(num_video_frames: int) -> int:
    """Latent frames of a clip of ``num_video_frames`` = 4n + 1 video frames."""
    if num_video_frames < 1 or (num_video_frames - 1) % TEMPORAL_STRIDE != 0:
        shorter = max(1, num_video_frames - (num_video_frames - 1) % TEMPORAL_STRIDE)
        raise ValueError(
            f"a clip of {num_video_frames} video frames does not map to latent frames: the Wan VAE needs "
            f"4n + 1 frames (e.g. 81); trim it to {shorter} frames or pad it to {shorter + TEMPORAL_STRIDE}"
        )
    return (num_video_frames - 1) // TEMPORAL_STRIDE + 1


def padded_frame_count(num_frames: int) -> int:
    """The smallest 4n + 1 >= num_frames (the Wan VAE's clip lengths)."""
    return num_frames + (-(num_frames - 1)) % TEMPORAL_STRIDE


def latent_frame_groups(num_video_frames: int) -> list[range]:
    """The video frames each latent frame covers: [range(0, 1), range(1, 5), range(5, 9), ...]."""
    groups = [range(0, 1)]
    for latent in range(1, num_latent_frames(num_video_frames)):
        start = 1 + (latent - 1) * TEMPORAL_STRIDE
        groups.append(range(start, start + TEMPORAL_STRIDE))
    return groups
