"""The video model as training runs it: the frozen Wan networks, and `PoseDiT`, whose forward is the flow
prediction of a cached clip.

`PoseDiT` holds the DiT (peft adapters are injected into it) and UniAnimate's pose guider (trained or frozen)
as submodules. Its forward is the one place a cached ClipBatch becomes the DiT's conditions (the pose guider
runs there, on the batch's pose images) and then calls iasa.video.denoiser.predict_flow, the flow prediction
sampling runs too. Under FSDP it is the root module (iasa.train.sharding): only a root forward lets FSDP free
each unit after its forward and finish every unit's gradient reduction at the end of backward.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange
from diffsynth.models.wan_video_dit import WanModel
from torch import nn

from iasa.attention.layout import SparseLayout
from iasa.train.cache import ClipBatch
from iasa.video.assembly import WanComponents, load_wan_components
from iasa.video.attention_patch import patch_self_attention
from iasa.video.config import PoseDrivenModelConfig, WanModelConfig
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.lora import apply_unianimate_checkpoint
from iasa.video.pose_guider import PoseGuider


def load_training_components(model: WanModelConfig, parts: Sequence[str]) -> WanComponents:
    """The listed networks (data_process needs no DiT, train no VAE, T5 or CLIP), UniAnimate's LoRA merged into
    the DiT and its pose guider loaded when a checkpoint is given, every weight frozen (training unfreezes what
    it trains)."""
    components = load_wan_components(model, parts)
    if isinstance(model, PoseDrivenModelConfig) and model.unianimate_checkpoint is not None:
        apply_unianimate_checkpoint(
            model.unianimate_checkpoint, components.dit, components.pose_guider, model.unianimate_lora_strength
        )
    parts = (components.dit, components.vae, components.text_encoder, components.image_encoder, components.pose_guider)
    for part in parts:
        if part is not None:
            part.requires_grad_(False)
    return components


class PoseDiT(nn.Module):
    """The Wan2.1-I2V DiT with UniAnimate's pose guider: forward(noisy, timestep, batch, layout) -> flow.

    dtype: the compute dtype the cached tensors are cast to (the frozen base's); backend: the sparse kernel;
    gradient checkpointing re-runs each DiT block in backward (offload keeps the saved block inputs in CPU
    memory).
    """

    def __init__(
        self,
        dit: WanModel,
        pose_guider: PoseGuider,
        dtype: torch.dtype,
        backend: str = "reference",
        gradient_checkpointing: bool = False,
        gradient_checkpointing_offload: bool = False,
    ) -> None:
        super().__init__()
        patch_self_attention(dit)
        self.dit, self.pose_guider = dit, pose_guider
        self.dtype, self.backend = dtype, backend
        self.gradient_checkpointing = gradient_checkpointing
        self.gradient_checkpointing_offload = gradient_checkpointing_offload

    def conditions(
        self, batch: ClipBatch, context: torch.Tensor | None = None, with_pose: bool | torch.Tensor = True
    ) -> FlowConditions:
        """The DiT's conditions of a cached clip: the pose guider's features of its pose video and the
        reference-pose embedding added to y; context overrides batch.context (the negative prompt's).

        with_pose False: no pose features reach the DiT, y keeps the reference-pose embedding (the negative pass
        of FlowConditions.unconditional, and the condition dropout that teaches it). The guider still runs and
        its features are multiplied by zero, which adds nothing (the flow equals pose_features=None): every
        process then runs the same FSDP collectives and gradient reductions whatever its own dropout draw.
        A (b,) bool tensor decides it clip by clip for a stacked batch (iasa.train.cache.stack_clips).
        """
        pose_features = self.pose_guider.pose_features(batch.pose_video.to(self.dtype))
        if isinstance(with_pose, torch.Tensor):
            pose_features = pose_features * rearrange(with_pose.to(pose_features), "b -> b 1 1 1 1")
        elif not with_pose:
            pose_features = pose_features * 0
        y = batch.y.to(self.dtype) + self.pose_guider.reference_condition(batch.reference_pose.to(self.dtype))
        return FlowConditions(batch.context if context is None else context, batch.clip_feature, y, pose_features)

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        batch: ClipBatch,
        layout: SparseLayout | None,
        context: torch.Tensor | None = None,
        with_pose: bool | torch.Tensor = True,
    ) -> torch.Tensor:
        """Flow (noise - x0) prediction (b, 16, T, h, w) for noisy latents (b, 16, T, h, w) at timestep (b,) in
        [0, 1000] (b > 1: a stacked batch, dense attention); layout None = dense attention; context overrides batch.context (the negative prompt's);
        with_pose False leaves the pose features out (see conditions)."""
        return predict_flow(
            self.dit, noisy_latents.to(self.dtype), timestep, self.conditions(batch, context, with_pose), layout,
            self.backend, self.gradient_checkpointing, self.gradient_checkpointing_offload,
        )  # fmt: skip
