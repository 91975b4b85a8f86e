"""From keypoints to the sparse layout of a clip: the function the video and training code call."""

from __future__ import annotations

import torch

from iasa.attention.config import SparseAttentionConfig
from iasa.attention.frame_selection import select_frames
from iasa.attention.layout import SparseLayout, without_regions
from iasa.attention.pose_distance import latent_pose_distance, video_pose_distance
from iasa.attention.regions import label_tokens, region_token_masks
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.video.latent_grid import num_latent_frames


def token_grid(image_size: tuple[int, int], token_stride: int) -> tuple[int, int]:
    """(h, w) tokens of one latent frame for an image of (height, width) pixels."""
    height, width = image_size
    if height < token_stride or width < token_stride:
        raise ValueError(f"image size {image_size} is smaller than one token ({token_stride} pixels)")
    return height // token_stride, width // token_stride


def build_sparse_layout(
    keypoints: WholeBodyKeypoints,
    config: SparseAttentionConfig,
    grid_size: tuple[int, int] | None = None,
) -> SparseLayout:
    """The layout of a clip of F = 4n + 1 video frames: T = n + 1 latent frames of h x w tokens.

    grid_size: (h, w) tokens per latent frame; by default image_size // token_stride. Keypoint
    coordinates are normalised, so any grid maps them (regions are drawn at grid x stride pixels).
    """
    num_latent_frames(keypoints.num_frames)  # a clear error for lengths other than 4n + 1
    if grid_size is None:
        grid_size = token_grid(keypoints.image_size, config.token_stride)
    grid_size = (int(grid_size[0]), int(grid_size[1]))
    if config.block_size <= 0:
        raise ValueError(f"block_size must be positive, got {config.block_size}")
    video_distance = video_pose_distance(
        keypoints, config.min_keypoint_confidence, config.align_scale, config.pose_hand_centroids
    )
    selection = select_frames(
        latent_pose_distance(video_distance), config.top_k, config.direction, config.keep_first_frame
    )
    regions = label_tokens(region_token_masks(keypoints, config, grid_size))
    layout = SparseLayout(
        frame_selection=selection,
        token_regions=torch.from_numpy(regions),
        grid_size=grid_size,
        block_size=config.block_size,
        region_names=tuple(config.regions),
    )
    return layout if config.local_regions else without_regions(layout)
