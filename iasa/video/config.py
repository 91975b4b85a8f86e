"""Configuration of the pose-driven Wan2.1-I2V video model: sizes, files, attention, sampling, windows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from iasa.config import ConfigError, check, check_choice
from iasa.attention.config import SparseAttentionConfig

# The DiT's CLIP projection (img_emb) takes ViT-H features of this width whatever the model size.
CLIP_FEATURE_DIM = 1280
# The DiT's image cross-attention reads the first 257 context tokens as CLIP tokens (16 x 16 patches + class).
CLIP_TOKENS = 257
# Channels of the I2V condition y: 4 first-frame mask channels + 16 VAE latent channels.
CONDITION_CHANNELS = 20
LATENT_CHANNELS = 16
# The prompt of clips without their own (training) and of generation, and the negative prompt of
# classifier-free guidance (the teacher's cfg in generation and distillation).
PROMPT = "a person talking and gesturing with their hands"
NEGATIVE_PROMPT = "blurry, distorted hands, deformed face, static, low quality"
# The DiT linears UniAnimate and the IASA reference trainer adapt (q/k/v/o match self- and cross-attention).
LORA_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")


@dataclass
class WanArchitecture:
    """Sizes of every network of Wan2.1-I2V-14B; a tiny preset shares all code paths with the real one."""

    # DiT (WanModel): width, feed-forward width, heads (head dim = dim / heads), blocks, timestep embedding.
    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    freq_dim: int = 256
    # umt5-xxl encoder (WanTextEncoder); text_dim is also the DiT's text input width.
    text_vocab: int = 256384
    text_dim: int = 4096
    text_attn_dim: int = 4096
    text_ffn_dim: int = 10240
    text_heads: int = 64
    text_layers: int = 24
    text_buckets: int = 32
    # Prompt tokens after padding (Wan pads every prompt to 512).
    text_length: int = 512
    # open-clip xlm-roberta ViT-H/14 vision tower (width fixed at CLIP_FEATURE_DIM).
    clip_image_size: int = 224
    clip_patch_size: int = 14
    clip_layers: int = 32
    clip_heads: int = 16
    clip_mlp_ratio: float = 4.0
    # Wan VAE base channel count.
    vae_base_dim: int = 96
    # Hidden channels of UniAnimate's pose guider (their concat_dim * 4).
    pose_hidden_channels: int = 16
    # False: no CLIP image encoder; the DiT is built without its image cross-attention (img_emb, k_img, v_img)
    # and clips carry zero CLIP tokens (clip_feature (0, 1280)). The reference image still enters through y.
    image_input: bool = True
    # "umt5": the umt5-xxl tokenizer folder of the model folder (random weights use UTF-8 bytes); "bytes":
    # UTF-8 bytes as token ids always, so a model folder needs no tokenizer folder.
    text_tokenizer: str = "umt5"


ARCHITECTURES: dict[str, WanArchitecture] = {
    "14b": WanArchitecture(),
    # CPU-sized: seconds per clip; the CLIP width and token count stay (the DiT hard-codes them).
    "tiny": WanArchitecture(
        dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32,
        text_vocab=256, text_dim=32, text_attn_dim=32, text_ffn_dim=64, text_heads=2, text_layers=1,
        text_buckets=8, text_length=16,
        clip_image_size=32, clip_patch_size=2, clip_layers=1, clip_heads=16, clip_mlp_ratio=0.25,
        vae_base_dim=8, pose_hidden_channels=16,
    ),
    # The miniature trained from scratch on one GPU (scripts/run_miniature.sh): at most 20 MB in fp16 for
    # DiT + pose guider + VAE + text encoder (7.0 M + 0.06 M + 2.0 M + 0.03 M parameters). Head dim 128: diffsynth's
    # 3D RoPE splits a head dim d into d - 2 (d // 3) + 2 (d // 3) channels, which needs d // 3 even (64 fails:
    # 21), and the fast sparse kernels need a power of two, which leaves 32 and 128 (the 14B's).
    "mini": WanArchitecture(
        dim=256, ffn_dim=1024, num_heads=2, num_layers=6, freq_dim=256,
        text_vocab=256, text_dim=32, text_attn_dim=32, text_ffn_dim=64, text_heads=2, text_layers=1,
        text_buckets=8, text_length=16,
        vae_base_dim=12, pose_hidden_channels=16, image_input=False, text_tokenizer="bytes",
    ),
}  # fmt: skip

TEXT_TOKENIZERS = ("umt5", "bytes")


def architecture(model_size: str) -> WanArchitecture:
    if model_size not in ARCHITECTURES:
        raise ConfigError(f"unknown model_size {model_size!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_size]


@dataclass
class WanModelConfig:
    """Which Wan networks, from where, in which dtype and on which device (what data_process needs)."""

    # Network sizes: "14b" (Wan2.1-I2V-14B), "tiny" (CPU tests and smoke runs) or "mini" (the miniature
    # trained from scratch, scripts/run_miniature.sh).
    model_size: str = "14b"
    # Folder in the Wan2.1-I2V-14B-720P layout; null = random weights (benchmarks, tiny smoke runs).
    model_dir: Optional[str] = "checkpoints/Wan2.1-I2V-14B-720P"
    # Compute dtype of every network.
    dtype: str = "bfloat16"
    # Torch device; "auto" = cuda when available, else cpu.
    device: str = "auto"

    def validate(self) -> None:
        import torch

        from iasa.video.assembly import DTYPES

        check_choice("model_size", self.model_size, sorted(ARCHITECTURES))
        check_choice("dtype", self.dtype, sorted(DTYPES))
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                check(False, "device", self.device, "must be auto, cpu, cuda or cuda:<index>")


@dataclass
class PoseDrivenModelConfig(WanModelConfig):
    """The Wan networks with UniAnimate's LoRA merged and its pose guider: the base training starts from."""

    # UniAnimate-Wan2.1-14B-Lora-12000.ckpt (LoRA merged into the DiT + the pose guider); null = none.
    unianimate_checkpoint: Optional[str] = "checkpoints/UniAnimate-Wan2.1-14B-Lora-12000.ckpt"
    # Multiplier of the UniAnimate LoRA update when it is merged (W += strength * B A).
    unianimate_lora_strength: float = 1.0

    def validate(self) -> None:
        super().validate()
        strength = self.unianimate_lora_strength
        check(math.isfinite(strength), "unianimate_lora_strength", strength, "must be a finite number")


@dataclass
class VideoModelConfig(PoseDrivenModelConfig):
    """What generation runs: the pose-driven base plus this project's trained weights."""

    # This project's LoRA (.safetensors written by iasa.video.lora.save_lora: the train stage's for the
    # teacher, the distill stage's for the student); null = none.
    lora_path: Optional[str] = None
    # The pose guider that LoRA was trained with (the train stage's pose_guider.safetensors, which distillation
    # keeps frozen); null = UniAnimate's, from unianimate_checkpoint.
    pose_guider_path: Optional[str] = None


@dataclass
class AttentionConfig:
    """The DiT's self-attention: what training runs (its layouts come from the data_process cache)."""

    # "dense": full self-attention (fastest SDPA kernel); "iasa": input-aware sparse attention.
    attention: str = "dense"
    # Sparse kernel (attention "iasa"): "fast" (own frame through cuDNN SDPA + cross-region Triton kernels,
    # iasa.attention.fast; CUDA), "flex" (FlexAttention block mask; CUDA, forward-only elsewhere) or
    # "reference" (SDPA with the dense mask; any device, slow: CPU runs and tests).
    backend: str = "reference"

    def validate(self) -> None:
        from iasa.attention.dispatch import BACKENDS
        from iasa.video.attention_patch import ATTENTION_MODES

        check_choice("attention", self.attention, ATTENTION_MODES)
        check_choice("backend", self.backend, BACKENDS)


@dataclass
class AttentionPatchConfig(AttentionConfig):
    """The DiT's self-attention in generation, where each window's layout is built from its keypoints."""

    # The sparse layout rule (attention "iasa").
    sparse: SparseAttentionConfig = field(default_factory=SparseAttentionConfig)


@dataclass
class InferenceSpeedConfig:
    # Precision of the DiT's big linears: "bf16", or "fp8" (e4m3 weights and activations with per-channel
    # and per-token scales through torchao; GPUs with compute capability >= 8.9 only; iasa.video.fp8_linear).
    dit_precision: str = "bf16"
    # Run the DiT blocks through one compiled block function (iasa.video.compiled_blocks): the elementwise chain
    # and the FP8 activation quantisation fused; the first clip of each resolution pays the compilation.
    compile_dit: bool = False
    # Compile the Wan VAE's decoder (torch.compile, static shapes; the first decode of a resolution compiles).
    compile_vae: bool = False
    # Clip decoder: "wan" (the Wan VAE, best quality) or "tae" (TAEHV's taew2_1, iasa.video.tae: a tiny
    # 2D-conv decoder, many times faster and lighter, slightly softer frames).
    decoder: str = "wan"
    # taew2_1.pth (or .safetensors) from github.com/madebyollin/taehv, read when decoder is "tae";
    # null = random weights (benchmarks, smoke runs).
    tae_checkpoint: Optional[str] = "checkpoints/taew2_1.pth"
    # Latent frames per decoder call after the first (Wan VAE: 1 = diffsynth's frame-by-frame loop; TAE: the
    # same streamed steps): the video is the same for any value; larger is faster and holds more activations.
    vae_latent_frames_per_call: int = 4
    # Memory format of the VAE decoder's 3D convolutions: "contiguous" or "channels_last_3d" (6-8% faster
    # decode on an H100 at 512x512 to 720x1280, benchmarks/results/pipeline.json).
    vae_memory_format: str = "channels_last_3d"

    def validate(self) -> None:
        from iasa.video.fp8_linear import DIT_PRECISIONS
        from iasa.video.tae import CLIP_DECODERS
        from iasa.video.vae_decode import VAE_MEMORY_FORMATS

        check_choice("dit_precision", self.dit_precision, DIT_PRECISIONS)
        check_choice("decoder", self.decoder, CLIP_DECODERS)
        check(self.vae_latent_frames_per_call >= 1, "vae_latent_frames_per_call", self.vae_latent_frames_per_call, "must be >= 1")
        check_choice("vae_memory_format", self.vae_memory_format, VAE_MEMORY_FORMATS)


@dataclass
class SamplerConfig:
    # The teacher's numbers are UniAnimate-DiT's inference (examples/unianimate_wan/inference_unianimate_wan_480p.py
    # and the 720p / long-video scripts: num_inference_steps=50, cfg_scale=1.5 "slow" or 1.0 "fast"; sigma_shift
    # not passed, so diffsynth/pipelines/wan_video.py's default 5.0).
    # Denoising steps: 50 for the teacher, 1-4 for the distilled student.
    num_steps: int = 50
    # Classifier-free guidance on prompt and pose together (the negative pass has the negative prompt and no
    # pose features: FlowConditions.unconditional): 1.5 for the teacher, 1.0 (one pass per step) for the student.
    cfg_scale: float = 1.5
    # Flow-matching timestep shift.
    shift: float = 5.0
    # Noise seed.
    seed: int = 0
    prompt: str = PROMPT
    # The unconditional branch's prompt when cfg_scale != 1.
    negative_prompt: str = NEGATIVE_PROMPT

    def validate(self) -> None:
        check(self.num_steps >= 1, "num_steps", self.num_steps, "must be >= 1 (0 steps would return the starting noise)")
        check(math.isfinite(self.cfg_scale) and self.cfg_scale >= 1, "cfg_scale", self.cfg_scale, "must be >= 1 (1 = no guidance)")
        check(math.isfinite(self.shift) and self.shift > 0, "shift", self.shift, "must be > 0")


@dataclass
class LongVideoConfig:
    # Latent frames per window (21 = 81 video frames, the clip length Wan was trained on).
    window_latent_frames: int = 21
    # Latent frames shared by neighbouring windows (a window's start is window - overlap after the previous one's).
    overlap_latent_frames: int = 4
    # Leading latent frames of each later window that it denoises on its own (own seeded noise, own flow) and that
    # weigh 0 in the blend: the window's y marks its start as the reference image's frame, which the clip there is
    # not. The overlap's remaining frames are blended every step. 2 as UniAnimate-DiT's long-video pipeline
    # (diffsynth/pipelines/wan_video.py, WanUniAnimateLongVideoPipeline: first_feature_per_seg, c = c[2:]; its
    # commented-out lines show 1 tried first), with its context_overlap 4 "(context_overlap-2)*4 frames are overlapped".
    private_leading_latent_frames: int = 2

    def validate(self) -> None:
        check(self.window_latent_frames >= 1, "window_latent_frames", self.window_latent_frames, "must be >= 1")
        check(
            0 <= self.overlap_latent_frames < self.window_latent_frames, "overlap_latent_frames", self.overlap_latent_frames,
            f"must be in [0, window_latent_frames={self.window_latent_frames})",
        )  # fmt: skip
        check(
            0 <= self.private_leading_latent_frames <= self.overlap_latent_frames, "private_leading_latent_frames",
            self.private_leading_latent_frames,
            f"must be in [0, overlap_latent_frames={self.overlap_latent_frames}] (a window's private frames lie in the previous window)",
        )  # fmt: skip


@dataclass
class StreamingConfig:
    """Chunked causal generation with the 1-step student (iasa.video.streaming)."""

    # Latent frames generated per DiT forward (1 latent frame = 4 video frames; the first chunk also gives the
    # reference frame). Larger chunks: higher throughput, later first frame.
    chunk_latent_frames: int = 1
    # Past latent frames kept in the key/value cache besides frame 0, chosen to cover the pose space
    # (iasa.video.streaming.evict_redundant_frame). >= trained_latent_frames - 2 keeps every past frame within
    # the trained length, so the stream equals the full-clip output there.
    cache_frames: int = 24
    # Latent frames the model was trained on: temporal RoPE positions stay in [0, trained_latent_frames - 1].
    trained_latent_frames: int = 21

    def validate(self) -> None:
        check(self.chunk_latent_frames >= 1, "chunk_latent_frames", self.chunk_latent_frames, "must be >= 1")
        check(self.trained_latent_frames >= 2, "trained_latent_frames", self.trained_latent_frames, "must be >= 2")
        check(
            self.chunk_latent_frames < self.trained_latent_frames, "chunk_latent_frames", self.chunk_latent_frames,
            f"must be < trained_latent_frames={self.trained_latent_frames}",
        )  # fmt: skip
        check(self.cache_frames >= 0, "cache_frames", self.cache_frames, "must be >= 0")
