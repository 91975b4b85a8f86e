"""What training needs from the video model, as a small interface.

The training logic (flow matching, DMD, region loss, checkpoints) only talks to a `VideoBackbone`: a DiT
module that peft adapters are injected into, a pose guider, a flow prediction for one clip and the VAE /
text / image encoders used to cache a dataset. iasa/video provides the real Wan2.1 + UniAnimate one; tests
provide tiny stand-ins with the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import nn

from iasa.attention.layout import SparseLayout
from iasa.pose.keypoints import WholeBodyKeypoints


@dataclass
class ClipBatch:
    """One cached training window (batch of one clip; larger batches come from gradient accumulation).

    latents (1, 16, T, h, w) clean VAE latents; context (1, L, D_text) text embeddings; negative_context
    (1, L, D_text) the negative prompt's; clip_feature (1, 257, D_clip) CLIP tokens of the reference frame;
    y (1, 20, T, h, w) I2V condition (frame mask + first-frame latent); pose_video (1, 3, F, H, W) pose
    images in [0, 1]; reference_pose (1, 3, H, W) pose image of the reference frame in [0, 1];
    layouts: cached SparseLayout per attention direction; keypoints: the window's F video frames.
    """

    name: str
    latents: torch.Tensor
    context: torch.Tensor
    negative_context: torch.Tensor
    clip_feature: torch.Tensor
    y: torch.Tensor
    pose_video: torch.Tensor
    reference_pose: torch.Tensor
    layouts: dict[str, SparseLayout] = field(default_factory=dict)
    keypoints: WholeBodyKeypoints | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ClipBatch":
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() and dtype else tensor.dtype)

        tensors = {
            name: move(getattr(self, name))
            for name in ("latents", "context", "negative_context", "clip_feature", "y", "pose_video", "reference_pose")
        }
        layouts = {
            direction: SparseLayout(
                frame_selection=layout.frame_selection.to(device),
                token_regions=layout.token_regions.to(device),
                grid_size=layout.grid_size,
            )
            for direction, layout in self.layouts.items()
        }
        return replace(self, **tensors, layouts=layouts)


class VideoBackbone(Protocol):
    """The video model as training sees it. `dit` holds every linear layer LoRA targets."""

    dit: nn.Module
    pose_guider: nn.Module

    def predict_flow(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        batch: ClipBatch,
        layout: SparseLayout | None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow (noise - x0) prediction (1, 16, T, h, w) for noisy latents (1, 16, T, h, w) at timestep (1,)
        in [0, 1000]; layout None = dense attention; context overrides batch.context (negative prompt)."""
        ...

    def set_gradient_checkpointing(self, enabled: bool, offload: bool) -> None: ...

    def set_attention_layout(self, layout: SparseLayout | None) -> None:
        """Make `layout` the current one again: gradient checkpointing re-runs blocks in backward with the
        model's current state, which must be the state of the forward pass being differentiated."""
        ...

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(1, 3, F, H, W) in [-1, 1] -> latents (1, 16, T, H/8, W/8), T = (F - 1) / 4 + 1."""
        ...

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 16, T, h, w) -> frames (1, 3, F, 8h, 8w) in [-1, 1]; differentiable."""
        ...

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """-> (1, L, D_text)."""
        ...

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [-1, 1] -> CLIP tokens (1, 257, D_clip)."""
        ...

    def image_condition(self, image: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The I2V condition y (1, 20, T, H/8, W/8) of a reference frame (1, 3, H, W) in [-1, 1]."""
        ...

    def render_pose(self, keypoints: WholeBodyKeypoints, height: int, width: int, style: str) -> torch.Tensor:
        """Pose images (F, 3, H, W) in [0, 1] that the pose guider reads, in ``style`` (iasa.pose.style)."""
        ...

    def build_layout(self, keypoints: WholeBodyKeypoints, direction: str, grid_size: tuple[int, int]) -> SparseLayout:
        """The clip's sparse layout (latent-frame poses come from the video frames each latent covers)."""
        ...
