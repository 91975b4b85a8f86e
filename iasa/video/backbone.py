"""The pose-driven Wan DiT as one callable: what sampling and training (iasa/train) both run.

`WanPoseBackbone` implements iasa.train.backbone.VideoBackbone: `dit` (peft adapters are injected into it),
`pose_guider` (UniAnimate's pose nets) and `predict_flow` for one clip with a given sparse layout.
"""

from __future__ import annotations

from typing import Any

import torch
from diffsynth.models.wan_video_dit import WanModel

from iasa.attention.layout import SparseLayout
from iasa.video.attention_patch import patch_self_attention, set_attention_layout
from iasa.video.denoiser import predict_flow
from iasa.video.pose_guider import UniAnimatePoseNets


class WanPoseBackbone:
    """A Wan2.1-I2V DiT with UniAnimate pose conditioning and routed self-attention."""

    def __init__(self, dit: WanModel, pose_guider: UniAnimatePoseNets, sparse_backend: str = "reference") -> None:
        self.dit = dit
        self.pose_guider = pose_guider
        patch_self_attention(dit, sparse_backend)
        self.use_gradient_checkpointing = False
        self.use_gradient_checkpointing_offload = False

    def set_gradient_checkpointing(self, enabled: bool, offload: bool) -> None:
        self.use_gradient_checkpointing, self.use_gradient_checkpointing_offload = enabled, offload

    def conditioned_flow(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        clip_feature: torch.Tensor,
        y: torch.Tensor,
        pose_features: torch.Tensor,
        layout: SparseLayout | None,
    ) -> torch.Tensor:
        """Flow for precomputed pose features (b, dim, T, h/2, w/2) and y (b, 20, T, h, w) that already
        holds the reference-pose embedding; layout None = dense attention."""
        set_attention_layout(self.dit, layout)
        return predict_flow(
            self.dit, noisy_latents, timestep, context, clip_feature, y, pose_features,
            use_gradient_checkpointing=self.use_gradient_checkpointing,
            use_gradient_checkpointing_offload=self.use_gradient_checkpointing_offload,
        )  # fmt: skip

    def predict_flow(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        batch: Any,
        layout: SparseLayout | None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow (b, 16, T, h, w) for a cached clip batch (iasa.train.backbone.ClipBatch: pose_video
        (b, 3, F, H, W) and reference_pose (b, 3, H, W) in [0, 1], y, clip_feature, context)."""
        dtype = noisy_latents.dtype
        pose_features = self.pose_guider.pose_features(batch.pose_video.to(dtype))
        y = batch.y.to(dtype) + self.pose_guider.reference_condition(batch.reference_pose.to(dtype))
        return self.conditioned_flow(
            noisy_latents, timestep, batch.context if context is None else context, batch.clip_feature, y,
            pose_features, layout,
        )  # fmt: skip
