"""Reference image + pose video (+ keypoints for the sparse layout) -> video frames.

`VideoGenerator` assembles the networks once (`from_config`), then `generate` makes one clip: prompt,
CLIP and first-frame conditions once per clip, pose features and the sparse layout once per window,
flow-matching sampling with window fusion, VAE decode (the Wan VAE, or the tiny TAE with speed.decoder "tae").

Under torchrun (`parallel`, N processes, one GPU each) every process holds the whole model. Random weights
are made rank 0's; the sparse layout of each window is built on rank 0 and broadcast; prompt, CLIP, first-frame
and pose conditions are computed by every process from the same inputs (cheap next to the DiT, and no
transfer); the DiT runs sequence-parallel (iasa.video.denoiser), so every process holds the same latents.

The decode runs on rank 0 alone, and the other processes return None. Not split by time: the decoder is
causal and its caches after latent frame t are the input of frame t + 1, so handing a time shard and its
WanDecoderState from rank to rank decodes one shard after another, the wall time of one GPU plus the
transfers (it would only pay with several independent clips, one per rank). Split by space it could run in
parallel, exactly, only with a halo exchange before every 3 x 3 convolution (about 30 in the decoder) and a
gather for the per-frame attention of its middle block, a rewrite of diffsynth's decoder forward not done
here; decoding overlapping tiles independently (what tiled decoders do) changes the pixels at the seams.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from einops import rearrange

from iasa.config import validate_config
from iasa.attention import SparseLayout, build_sparse_layout
from iasa.parallel import ParallelGroup, broadcast_dataclass, broadcast_module, single_process
from iasa.pose.keypoints import ARRAY_FIELDS, WholeBodyKeypoints
from iasa.video.assembly import ALL_PARTS, WanComponents, load_wan_components, resolve_device, resolve_dtype
from iasa.video.attention_patch import patch_self_attention
from iasa.video.conditioning import (
    encode_clip_feature,
    encode_first_frame_condition,
    encode_prompt,
    image_to_tensor,
)
from iasa.video.config import (
    AttentionPatchConfig,
    InferenceSpeedConfig,
    LongVideoConfig,
    SamplerConfig,
    VideoModelConfig,
)
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.fp8_linear import quantize_dit_fp8, require_torchao
from iasa.video.latent_grid import TEMPORAL_STRIDE, TOKEN_STRIDE, VAE_STRIDE, num_latent_frames, padded_frame_count
from iasa.video.lora import apply_unianimate_checkpoint, load_lora, load_pose_guider
from iasa.video.sampler import WindowInputs, sample_latents
from iasa.video.tae import TaeDecoder, decode_clip, load_tae_decoder, random_tae_decoder
from iasa.video.vae_decode import decode_video
from iasa.video.windows import plan_windows


def pad_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """Repeat the last frame (axis 0) up to `count` frames."""
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), axis=0)])


def pad_keypoints(keypoints: WholeBodyKeypoints, count: int) -> WholeBodyKeypoints:
    return WholeBodyKeypoints(
        **{name: pad_frames(getattr(keypoints, name), count) for name in ARRAY_FIELDS}, image_size=keypoints.image_size
    )


@dataclass
class VideoGenerator:
    components: WanComponents
    attention: AttentionPatchConfig
    long_video: LongVideoConfig
    speed: InferenceSpeedConfig = field(default_factory=InferenceSpeedConfig)
    # The clip decoder when speed.decoder is "tae" (else the Wan VAE decodes).
    tae: TaeDecoder | None = None
    # The processes that share each DiT forward (torchrun); a group of one by default.
    parallel: ParallelGroup = field(default_factory=single_process)

    @classmethod
    def from_config(
        cls,
        model: VideoModelConfig,
        attention: AttentionPatchConfig,
        long_video: LongVideoConfig,
        speed: InferenceSpeedConfig | None = None,
        parallel: ParallelGroup | None = None,
    ) -> "VideoGenerator":
        """speed.dit_precision "fp8": the DiT blocks' big linears in e4m3 (iasa.video.fp8_linear; FP8 GPUs only).
        parallel: a torchrun group (every process builds the whole model on its own device); None = one process."""
        speed = InferenceSpeedConfig() if speed is None else speed
        parallel = single_process(resolve_device(model.device)) if parallel is None else parallel
        for prefix, part in (("model.", model), ("attention.", attention), ("long_video.", long_video), ("speed.", speed)):
            validate_config(part, prefix)  # load_config did already; here for configs built in code
        tae = None
        if speed.decoder == "tae":  # first: a missing file is reported before the big networks load
            device, dtype = resolve_device(model.device), resolve_dtype(model.dtype)
            tae = (
                load_tae_decoder(speed.tae_checkpoint, device, dtype)
                if speed.tae_checkpoint is not None
                else random_tae_decoder(device=device, dtype=dtype)
            )
        if speed.dit_precision == "fp8":  # before the 14B weights load
            require_torchao()
        components = load_wan_components(model)
        # Random initialisation differs per process: every process takes rank 0's (files below load alike).
        for part in ALL_PARTS if model.model_dir is None else ("pose_guider",):
            broadcast_module(getattr(components, part), parallel)
        if tae is not None and speed.tae_checkpoint is None:
            broadcast_module(tae, parallel)
        if model.unianimate_checkpoint is not None:
            apply_unianimate_checkpoint(
                model.unianimate_checkpoint, components.dit, components.pose_guider, model.unianimate_lora_strength
            )
        if model.pose_guider_path is not None:
            load_pose_guider(model.pose_guider_path, components.pose_guider)
        if model.lora_path is not None:
            components.dit = load_lora(model.lora_path, components.dit)
            components.dit.to(device=components.device, dtype=components.dtype)
        if speed.dit_precision == "fp8":  # last: a later .to(dtype) would cast the e4m3 weights back
            quantize_dit_fp8(components.dit)
        if speed.compile_vae:
            components.vae.model.decoder.compile(dynamic=False)
        patch_self_attention(components.dit)
        return cls(
            components=components, attention=attention, long_video=long_video, speed=speed, tae=tae, parallel=parallel
        )

    def window_inputs(
        self,
        pose: torch.Tensor,
        context: torch.Tensor,
        clip_feature: torch.Tensor,
        y: torch.Tensor,
        keypoints: WholeBodyKeypoints | None,
        num_latent_frames: int,
    ) -> list[WindowInputs]:
        """Conditions and layout per window: pose (1, 3, F, H, W) in [0, 1] for the padded clip; context, the
        CLIP tokens and y (with the reference-pose embedding, as long as one window) are every window's. Under
        sequence parallelism rank 0 builds the layouts (the others pass keypoints None) and sends them."""
        windows = plan_windows(
            num_latent_frames, self.long_video.window_latent_frames, self.long_video.overlap_latent_frames
        )
        height, width = pose.shape[-2:]
        inputs = []
        for window in windows:
            layout = None
            if self.attention.attention == "iasa":
                frames = window.video_frames
                if self.parallel.is_main:
                    layout = build_sparse_layout(
                        keypoints.slice_frames(frames.start, frames.stop), self.attention.sparse,
                        grid_size=(height // TOKEN_STRIDE, width // TOKEN_STRIDE),
                    )  # fmt: skip
                layout = broadcast_dataclass(layout, SparseLayout, self.parallel).to(pose.device)
            features = self.components.pose_guider.pose_features(pose[:, :, window.video_frames])
            conditions = FlowConditions(context, clip_feature, y[:, :, : window.length], features)
            inputs.append(WindowInputs(window, conditions, layout))
        return inputs

    @torch.no_grad()
    def generate(
        self,
        image: np.ndarray,
        pose_video: np.ndarray,
        reference_pose: np.ndarray,
        keypoints: WholeBodyKeypoints | None,
        sampler: SamplerConfig,
        progress: bool = True,
    ) -> np.ndarray | None:
        """image (H, W, 3) uint8, pose_video (F, H, W, 3) uint8, reference_pose (H, W, 3) uint8 (the pose
        image of the reference frame), keypoints of the F frames (needed for attention "iasa"; on rank 0
        only under sequence parallelism) -> video (F, H, W, 3) uint8 (None on the other ranks). H and W must be
        multiples of 16; every process passes the same images."""
        latents = self.generate_latents(image, pose_video, reference_pose, keypoints, sampler, progress)
        if not self.parallel.is_main:
            return None
        video = rearrange(((self.decode(latents)[0].float() + 1) * 127.5).round().clamp(0, 255), "c f h w -> f h w c")
        return video[: pose_video.shape[0]].to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def generate_latents(
        self,
        image: np.ndarray,
        pose_video: np.ndarray,
        reference_pose: np.ndarray,
        keypoints: WholeBodyKeypoints | None,
        sampler: SamplerConfig,
        progress: bool = True,
    ) -> torch.Tensor:
        """`generate` up to the denoised latents (1, 16, T, H / 8, W / 8) of the padded clip (every rank's)."""
        validate_config(sampler, "sampler.")
        c = self.components
        num_frames, height, width, _ = pose_video.shape
        if image.shape[:2] != (height, width) or height % TOKEN_STRIDE or width % TOKEN_STRIDE:
            raise ValueError(
                f"image {image.shape[:2]} and pose video {(height, width)} must share one size, a multiple of {TOKEN_STRIDE}"
            )
        needs_keypoints = self.attention.attention == "iasa" and self.parallel.is_main
        if needs_keypoints and (keypoints is None or keypoints.num_frames != num_frames):
            raise ValueError("attention 'iasa' needs the keypoints of every frame of the pose video")
        padded = padded_frame_count(num_frames)
        latent_frames = num_latent_frames(padded)
        window_frames = TEMPORAL_STRIDE * (min(latent_frames, self.long_video.window_latent_frames) - 1) + 1

        context = encode_prompt(c.tokenizer, c.text_encoder, sampler.prompt, c.device)
        negative = (
            encode_prompt(c.tokenizer, c.text_encoder, sampler.negative_prompt, c.device)
            if sampler.cfg_scale != 1.0
            else None
        )
        reference = image_to_tensor(image, c.device, c.dtype)
        clip_feature = encode_clip_feature(c.image_encoder, reference).to(c.dtype)
        y = encode_first_frame_condition(c.vae, reference, window_frames)
        reference_pose_tensor = rearrange(
            torch.from_numpy(np.ascontiguousarray(reference_pose)).to(c.device, c.dtype) / 255.0, "h w c -> 1 c h w"
        )
        y = y + c.pose_guider.reference_condition(reference_pose_tensor)

        pose = rearrange(
            torch.from_numpy(pad_frames(pose_video, padded)).to(c.device, c.dtype) / 255.0, "f h w c -> 1 c f h w"
        )
        keypoints = pad_keypoints(keypoints, padded) if keypoints is not None else None
        windows = self.window_inputs(pose, context, clip_feature, y, keypoints, latent_frames)
        denoise = functools.partial(
            predict_flow, c.dit, backend=self.attention.backend, compiled=self.speed.compile_dit, parallel=self.parallel
        )
        return sample_latents(
            denoise, windows, negative, (latent_frames, height // VAE_STRIDE, width // VAE_STRIDE), sampler,
            overlap=self.long_video.overlap_latent_frames, private=self.long_video.private_leading_latent_frames,
            progress=progress and self.parallel.is_main,
        )  # fmt: skip

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 16, T, h, w) -> video (1, 3, 4 (T - 1) + 1, 8 h, 8 w) in [-1, 1], with the clip decoder."""
        if self.tae is not None:
            return decode_clip(self.tae, latents, self.speed.vae_latent_frames_per_call)
        vae = self.components.vae
        return decode_video(vae, latents, self.speed.vae_memory_format, self.speed.vae_latent_frames_per_call)
