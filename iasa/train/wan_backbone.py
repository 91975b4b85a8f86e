"""The real VideoBackbone for training: iasa/video's Wan2.1-I2V + UniAnimate model (any model_size, so
the tiny preset runs the same code as the 14B one) plus the encoders that data_process needs."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from einops import rearrange

from iasa.attention.build import build_sparse_layout
from iasa.attention.layout import SparseLayout
from iasa.pose.drawing import draw_pose_frames
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.video.assembly import WanComponents, load_wan_components
from iasa.video.attention_patch import set_attention_layout
from iasa.video.backbone import WanPoseBackbone
from iasa.video.conditioning import encode_clip_feature, encode_first_frame_condition, encode_prompt
from iasa.video.config import AttentionPatchConfig, VideoModelConfig
from iasa.video.lora import apply_unianimate_checkpoint


class WanTrainingBackbone:
    """Frozen Wan networks; `dit` takes the LoRA adapters, `pose_guider` may be trained."""

    def __init__(self, components: WanComponents, attention: AttentionPatchConfig) -> None:
        self.components = components
        self.attention = attention
        self.dit = components.dit
        self.pose_guider = components.pose_nets
        if components.dit is not None:
            self.pose_backbone = WanPoseBackbone(components.dit, components.pose_nets, attention.sparse.backend)
        for part in (components.dit, components.vae, components.text_encoder, components.image_encoder, components.pose_nets):
            if part is not None:
                part.requires_grad_(False)

    @classmethod
    def from_config(cls, model: VideoModelConfig, attention: AttentionPatchConfig, parts: Sequence[str]) -> "WanTrainingBackbone":
        """Only the listed networks are built (data_process needs no DiT, train no VAE, T5 or CLIP)."""
        if model.lora_path is not None:
            raise ValueError(
                "model.lora_path is for inference; in training set lora.init_path (train) or teacher_lora (distill)"
            )
        components = load_wan_components(model, parts)
        if model.unianimate_checkpoint is not None and components.dit is not None:
            apply_unianimate_checkpoint(model.unianimate_checkpoint, components.dit, components.pose_nets, model.unianimate_lora_strength)
        return cls(components, attention)

    @property
    def device(self) -> torch.device:
        return self.components.device

    def _input(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.components.device, dtype=self.components.dtype)

    def set_gradient_checkpointing(self, enabled: bool, offload: bool) -> None:
        self.pose_backbone.set_gradient_checkpointing(enabled, offload)

    def set_attention_layout(self, layout: SparseLayout | None) -> None:
        set_attention_layout(self.dit, layout)

    def predict_flow(self, noisy_latents, timestep, batch, layout: SparseLayout | None, context=None) -> torch.Tensor:
        dtype = self.components.dtype
        return self.pose_backbone.predict_flow(
            noisy_latents.to(dtype), timestep, batch, layout, context=context
        )  # fmt: skip

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self.components.vae.encode([self._input(frames[0])], device=self.device).to(self.components.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Differentiable decode (diffsynth's decode clamps in place, so the VAE model is called directly)."""
        vae = self.components.vae
        return vae.model.decode(latents.to(self.components.dtype), vae.scale).clamp(-1, 1)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        return encode_prompt(self.components.tokenizer, self.components.text_encoder, prompt, self.device)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return encode_clip_feature(self.components.image_encoder, self._input(image[0]))

    def image_condition(self, image: torch.Tensor, num_frames: int) -> torch.Tensor:
        return encode_first_frame_condition(self.components.vae, self._input(image[0]), num_frames)

    def render_pose(self, keypoints: WholeBodyKeypoints, height: int, width: int, style: str) -> torch.Tensor:
        if tuple(keypoints.image_size) != (height, width):
            raise ValueError(f"keypoints are for {keypoints.image_size}, pose images asked at {(height, width)}")
        return rearrange(torch.from_numpy(draw_pose_frames(keypoints, style)), "f h w c -> f c h w").float() / 255

    def build_layout(self, keypoints: WholeBodyKeypoints, direction: str, grid_size: tuple[int, int]) -> SparseLayout:
        return build_sparse_layout(keypoints, replace(self.attention.sparse, direction=direction), grid_size)
