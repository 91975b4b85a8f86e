"""Configs of the training stages: data_process, train (sparse-attention LoRA fine-tune), distill (DMD), the
two that only a model trained from scratch needs (the miniature, config/miniature/): pretrain_vae (the Wan VAE
on the dataset's videos) and pretrain (the dense teacher: flow matching on every DiT parameter), and distill_tae
(a tiny TAE decoder for a VAE that taew2_1 does not fit, such as the miniature's).

Every stage has its own dataclass; `task` picks which one a YAML file is read with. Defaults live here.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from iasa.attention.config import LayoutRuleConfig
from iasa.config import check, check_choice
from iasa.video.config import (
    LORA_TARGETS,
    NEGATIVE_PROMPT,
    PROMPT,
    AttentionConfig,
    PoseDrivenModelConfig,
    WanModelConfig,
)
from iasa.video.latent_grid import TEMPORAL_STRIDE, TOKEN_STRIDE

TASKS = ("data_process", "train", "distill", "pretrain", "pretrain_vae", "distill_tae")
MIXED_PRECISIONS = ("bf16", "fp16", "fp32")
REPORTERS = ("tensorboard", "wandb", "none")


def _check_directions(key: str, directions: tuple[str, ...] | list[str]) -> None:
    from iasa.attention.frame_selection import DIRECTIONS

    unknown = [name for name in directions if name not in DIRECTIONS]
    check(not unknown, key, list(directions), f"unknown directions {unknown}; choose from {list(DIRECTIONS)}")


def _check_probability(key: str, value: float) -> None:
    check(0 <= value <= 1, key, value, "must be a probability in [0, 1]")


@dataclass
class DataConfig:
    # Dataset folder: videos/<name>.mp4, keypoints/<name>.npz (or keypoints/<name>/ with one DWPose dict
    # per frame as .json or .npy), optional prompts/<name>.txt and audio/<name>.wav.
    dataset_dir: str = "data/train"
    # Where data_process writes one folder of cached tensors per training clip.
    cache_dir: str = "data/train_cache"
    # Training resolution; source frames are resized (aspect kept) and centre-cropped to it.
    height: int = 512
    width: int = 512
    # Video frames per training clip; must be 4k + 1 for the Wan VAE (81 -> 21 latent frames).
    num_frames: int = 81
    # Take every n-th source frame (e.g. 2 turns 30 fps footage into 15 fps clips).
    frame_stride: int = 1
    # Cut at most this many consecutive non-overlapping training clips from each video.
    max_clips_per_video: int = 4
    # Prompt for videos without prompts/<name>.txt.
    default_prompt: str = PROMPT
    # Prompt of the unconditional branch of classifier-free guidance, cached for the teacher's cfg in distill.
    negative_prompt: str = NEGATIVE_PROMPT
    # Pose images cached for training (iasa.pose.style): "unianimate", "face" (also the face points, so that
    # the guider sees the mouth) or "auto" (UniAnimate's checkpoint's: "unianimate"). The LoRA trained on the
    # cache records it, and inference draws it.
    pose_style: str = "auto"

    def validate(self) -> None:
        check(self.num_frames >= 1 and (self.num_frames - 1) % TEMPORAL_STRIDE == 0, "num_frames", self.num_frames,
              f"must be {TEMPORAL_STRIDE}k + 1 (the Wan VAE's temporal stride is {TEMPORAL_STRIDE}), e.g. 81")  # fmt: skip
        for key in ("height", "width"):
            value = getattr(self, key)
            check(value >= TOKEN_STRIDE and value % TOKEN_STRIDE == 0, key, value, f"must be a positive multiple of {TOKEN_STRIDE}")
        check(self.frame_stride >= 1, "frame_stride", self.frame_stride, "must be >= 1")
        check(self.max_clips_per_video >= 1, "max_clips_per_video", self.max_clips_per_video, "must be >= 1")


def sparse_attention() -> AttentionConfig:
    return AttentionConfig(attention="iasa")


@dataclass
class LoraConfig:
    # LoRA rank and scale numerator (scale = alpha / rank), as in the reference repo.
    rank: int = 128
    alpha: int = 128
    # Linear layers of every DiT block that get LoRA (matched by name suffix, peft style).
    targets: tuple[str, ...] = LORA_TARGETS
    # A LoRA file (iasa.video.lora format, e.g. a train run's lora.safetensors) to start from; null = fresh (B = 0).
    init_path: Optional[str] = None

    def validate(self) -> None:
        check(self.rank >= 1, "rank", self.rank, "must be >= 1")
        check(self.alpha > 0, "alpha", self.alpha, "must be > 0 (scale = alpha / rank)")
        check(len(self.targets) > 0, "targets", list(self.targets), "must name at least one DiT linear layer")


@dataclass
class OptimConfig:
    # AdamW, as the reference repo.
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    # Linear warm-up from 0 over this many optimiser steps, then constant.
    warmup_steps: int = 0
    # Gradient clipping by global norm; 0 disables it.
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(len(self.betas) == 2 and all(0 <= beta < 1 for beta in self.betas), "betas", list(self.betas),
              "must be two numbers in [0, 1)")  # fmt: skip
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "must be >= 0 (0 = no clipping)")


@dataclass
class FlowConfig:
    # Wan's timestep shift of the flow-matching schedule.
    shift: float = 5.0
    # Discrete training timesteps.
    num_train_timesteps: int = 1000
    # Sample training timesteps from this fraction range of the schedule (0 = pure noise end).
    min_timestep_fraction: float = 0.0
    max_timestep_fraction: float = 1.0

    def validate(self) -> None:
        check(self.shift > 0, "shift", self.shift, "must be > 0")
        check(self.num_train_timesteps >= 1, "num_train_timesteps", self.num_train_timesteps, "must be >= 1")
        check(0 <= self.min_timestep_fraction < self.max_timestep_fraction <= 1, "max_timestep_fraction",
              self.max_timestep_fraction, f"must satisfy 0 <= min_timestep_fraction ({self.min_timestep_fraction}) < "
              "max_timestep_fraction <= 1")  # fmt: skip


@dataclass
class RunConfig:
    # Run folder: checkpoints/, logs/, the final LoRA and the resolved config.
    output_dir: str = "outputs/train"
    # Optimiser steps (generator steps for distill).
    max_steps: int = 1000
    # Micro-batches per optimiser step (one clip per micro-batch and device).
    gradient_accumulation_steps: int = 1
    seed: int = 0
    # Write a resumable checkpoint every N optimiser steps (and at the end); keep the newest K.
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    # "auto" resumes from the newest checkpoint in output_dir, a path resumes from it, "none" starts fresh.
    resume: str = "auto"
    log_every: int = 10
    # Autocast precision: "bf16", "fp16" or "fp32" (no autocast).
    mixed_precision: str = "bf16"
    # Recompute DiT blocks in the backward pass; offload keeps the saved block inputs in CPU memory.
    gradient_checkpointing: bool = True
    gradient_checkpointing_offload: bool = False
    # "tensorboard", "wandb" (when installed) or "none".
    report_to: str = "tensorboard"
    # Wall-clock budget of the training loop in seconds (null = none), counted from the end of the first step (which
    # compiles the kernels: the fast sparse kernels' Triton compile takes ~20 s on an H200, more than a short
    # stage's budget): the first optimiser step that ends past it is the last; the run then writes a checkpoint
    # and its final outputs as at max_steps. Running again (resume "auto") continues from that checkpoint.
    time_limit_s: Optional[float] = None

    def validate(self) -> None:
        for key in ("max_steps", "gradient_accumulation_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.time_limit_s is None or self.time_limit_s > 0, "time_limit_s", self.time_limit_s, "must be > 0 or null")
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_choice("report_to", self.report_to, REPORTERS)
        check(self.report_to != "wandb" or importlib.util.find_spec("wandb") is not None, "report_to", self.report_to,
              "wandb is not installed; pip install wandb or use tensorboard")  # fmt: skip


@dataclass
class DataProcessConfig:
    task: str = "data_process"
    data: DataConfig = field(default_factory=DataConfig)
    # The Wan2.1-I2V encoders (size, files, dtype, device); see iasa/video/config.py.
    model: WanModelConfig = field(default_factory=WanModelConfig)
    # The sparse layout rule (iasa/attention/config.py); the region-loss masks of distill are drawn with it too.
    layout: LayoutRuleConfig = field(default_factory=LayoutRuleConfig)
    # Build and cache a layout for each of these attention directions ("both" teacher, "past" student).
    layout_directions: tuple[str, ...] = ("both", "past")

    def validate(self) -> None:
        _check_directions("layout_directions", self.layout_directions)


@dataclass
class ConditionDropoutConfig:
    # UniAnimate's rates: no pose features in 5% of steps (the cfg negative pass's state; y keeps the
    # reference-pose embedding), zeroed CLIP features and y in 10% (iasa.train.finetune.drop_conditions).
    pose: float = 0.05
    image: float = 0.10

    def validate(self) -> None:
        _check_probability("pose", self.pose)
        _check_probability("image", self.image)


@dataclass
class FinetuneConfig:
    task: str = "train"
    # Cached training clips written by the data_process stage.
    cache_dir: str = "data/train_cache"
    # Hold every clip read in memory on the training device (a cache of a few hundred small clips, as the
    # miniature's): later steps read no file.
    cache_in_memory: bool = False
    # The Wan2.1-I2V + UniAnimate base (size, files, UniAnimate checkpoint, dtype, device); iasa/video/config.py.
    model: PoseDrivenModelConfig = field(default_factory=PoseDrivenModelConfig)
    # Self-attention: "iasa" (sparse, with the cached layouts) or "dense", and the sparse kernel.
    attention: AttentionConfig = field(default_factory=sparse_attention)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Train the pose guider together with the LoRA.
    train_pose_guider: bool = True
    # A pose_guider.safetensors to start the pose guider from (the pretrain stage's); null = UniAnimate's from
    # model.unianimate_checkpoint (random without one).
    pose_guider_init: Optional[str] = None
    # False: global-only sparse attention, the cached layouts without their region restriction (a query token
    # sees every token of the frames chosen for it; iasa.attention.layout.without_regions). True: global + local.
    local_regions: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    dropout: ConditionDropoutConfig = field(default_factory=ConditionDropoutConfig)
    # Which cached layout the sparse attention uses: "both" (bidirectional teacher) or "past".
    attention_direction: str = "both"
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        _check_directions("attention_direction", [self.attention_direction])


@dataclass
class RegionLossConfig:
    # lambda_region: weight of the region loss next to the DMD loss; 0 switches decoding off.
    weight: float = 1.0
    # Per-region weights lambda_r of the pixel and LPIPS terms. Regions are drawn by iasa/attention's
    # rasteriser (face, hands, left_hand, right_hand, arms, torso) with the layout rule each clip was cached
    # with (data_process's layout keys); where they overlap the one listed first wins; "background" is every
    # pixel outside them.
    region_weights: dict[str, float] = field(
        default_factory=lambda: {"face": 2.0, "hands": 2.0, "arms": 1.0, "torso": 0.5, "background": 0.1}
    )
    # Latent frames decoded with gradients for the loss (a random contiguous run; the first decodes to one
    # video frame, each further one to four). At 512x512 the VAE decoder keeps ~6 GB of activations for
    # one latent frame and ~21 GB for two, so one is what fits next to the 14B distill step in 80 GB.
    latent_frames: int = 1
    # Region-weighted mean absolute pixel error: needs no model file.
    pixel_weight: float = 1.0
    # LPIPS as a TorchScript file taking two (N, 3, H, W) images in [-1, 1] -> (N,) distances.
    # A TorchScript file is code, and loading it runs that code: use only a file you exported yourself (or
    # otherwise trust), never one that came with a dataset or a shared checkpoint. Paths inside the run's
    # cache_dir or run.output_dir are refused.
    lpips_weight: float = 0.0
    lpips_path: Optional[str] = None
    # Face identity (ArcFace-style) as a TorchScript file taking (N, 3, 112, 112) in [-1, 1] -> (N, D); trusted
    # code, as lpips_path.
    face_id_weight: float = 0.0
    face_id_path: Optional[str] = None

    def validate(self) -> None:
        from iasa.attention.regions import REGION_NAMES
        from iasa.train.region_loss import BACKGROUND

        unknown = [name for name in self.region_weights if name not in (*REGION_NAMES, BACKGROUND)]
        check(not unknown, "region_weights", dict(self.region_weights),
              f"unknown regions {unknown}; choose from {[*REGION_NAMES, BACKGROUND]}")  # fmt: skip
        negative = {name: value for name, value in self.region_weights.items() if not value >= 0}
        check(not negative, "region_weights", dict(self.region_weights), f"weights must be >= 0, got {negative}")
        for key in ("weight", "pixel_weight", "lpips_weight", "face_id_weight"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0 (0 switches the term off)")
        check(self.latent_frames >= 1, "latent_frames", self.latent_frames, "must be >= 1")
        check(self.face_id_weight == 0 or "face" in self.region_weights, "face_id_weight", self.face_id_weight,
              "needs a 'face' entry in region.region_weights")  # fmt: skip
        for key in ("lpips", "face_id"):
            path = getattr(self, f"{key}_path")
            check(getattr(self, f"{key}_weight") == 0 or bool(path), f"{key}_path", path,
                  f"{key}_weight > 0 needs the model file; set {key}_path, or {key}_weight=0")  # fmt: skip


@dataclass
class DistillConfig:
    task: str = "distill"
    # Cached training clips written by the data_process stage (with both "both" and "past" layouts).
    cache_dir: str = "data/train_cache"
    cache_in_memory: bool = False  # as FinetuneConfig's
    # The Wan2.1-I2V + UniAnimate base (size, files, UniAnimate checkpoint, dtype, device); iasa/video/config.py.
    model: PoseDrivenModelConfig = field(default_factory=PoseDrivenModelConfig)
    # Self-attention of every role: "iasa" (sparse, with the cached layouts) or "dense", and the sparse kernel.
    attention: AttentionConfig = field(default_factory=sparse_attention)
    # Teacher: the fine-tuned LoRA (and pose guider; null = UniAnimate's) from the train stage, frozen.
    teacher_lora: Optional[str] = None
    teacher_pose_guider: Optional[str] = None
    # The student (generator) and fake-score critic adapters copy the teacher LoRA's rank, targets and weights.
    # Few-step generator noise levels, noisiest first (1 step = [1.0]).
    generator_sigmas: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    # Attention direction of the student ("past": causal sparse) and of teacher and critic ("both").
    student_direction: str = "past"
    teacher_direction: str = "both"
    # Classifier-free guidance of the teacher's score, negative pass without pose features (1 = off, saves a
    # forward); 1.5 as UniAnimate-DiT's examples/unianimate_wan/inference_unianimate_wan_480p.py samples.
    teacher_cfg_scale: float = 1.5
    # Critic (fake score) updates per generator update.
    critic_steps_per_generator_step: int = 5
    optim: OptimConfig = field(default_factory=OptimConfig)
    critic_learning_rate: float = 1e-4
    flow: FlowConfig = field(default_factory=lambda: FlowConfig(min_timestep_fraction=0.02, max_timestep_fraction=0.98))
    region: RegionLossConfig = field(default_factory=RegionLossConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/distill"))

    def validate(self) -> None:
        check(bool(self.teacher_lora), "teacher_lora", self.teacher_lora, "set it to the lora.safetensors the train task wrote")
        sigmas = list(self.generator_sigmas)
        decreasing = all(later < earlier for earlier, later in zip(sigmas, sigmas[1:]))
        check(bool(sigmas) and decreasing and 0 < sigmas[-1] and sigmas[0] <= 1, "generator_sigmas", sigmas,
              "must decrease within (0, 1], noisiest first (e.g. [1.0, 0.5])")  # fmt: skip
        _check_directions("student_direction", [self.student_direction])
        _check_directions("teacher_direction", [self.teacher_direction])
        check(self.teacher_cfg_scale >= 1, "teacher_cfg_scale", self.teacher_cfg_scale, "must be >= 1 (1 = no guidance)")
        check(self.critic_steps_per_generator_step >= 0, "critic_steps_per_generator_step",
              self.critic_steps_per_generator_step, "must be >= 0")  # fmt: skip
        check(self.critic_learning_rate > 0, "critic_learning_rate", self.critic_learning_rate, "must be > 0")
        for key in ("lpips_path", "face_id_path"):
            path = getattr(self.region, key)
            for folder, name in ((self.cache_dir, "cache_dir"), (self.run.output_dir, "run.output_dir")):
                inside = path is not None and Path(path).resolve().is_relative_to(Path(folder).resolve())
                check(not inside, f"region.{key}", path, f"is inside {name}, where files come with data or other runs; "
                      "a TorchScript file runs code when loaded: keep your own trusted export elsewhere")  # fmt: skip


@dataclass
class PretrainConfig:
    """The dense teacher from scratch: flow matching on every DiT parameter and the pose guider."""

    task: str = "pretrain"
    cache_dir: str = "data/train_cache"
    cache_in_memory: bool = False  # as FinetuneConfig's
    # Clips stacked into one forward per micro-batch, each at its own noise level and dropout draw (dense
    # attention, clips of one shape). A DiT as small as the miniature's is launch-bound at one clip, so 8
    # stacked take little longer than one.
    clips_per_step: int = 1
    # The model folder the DiT starts from and whose VAE and text encoder the written model folder copies (the
    # pretrain_vae stage's run.output_dir/model); unianimate_checkpoint must be null.
    model: PoseDrivenModelConfig = field(default_factory=lambda: PoseDrivenModelConfig(unianimate_checkpoint=None))
    # A pose_guider.safetensors to start the pose guider from, with model.model_dir an earlier pretrain run's
    # model folder: the teacher continued in a later command (null = a random pose guider).
    pose_guider_init: Optional[str] = None
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    attention_direction: str = "both"
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    dropout: ConditionDropoutConfig = field(default_factory=ConditionDropoutConfig)
    # Writes run.output_dir/model/ (the model folder with the trained DiT) and run.output_dir/pose_guider.safetensors.
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/pretrain", gradient_checkpointing=False))

    def validate(self) -> None:
        _check_directions("attention_direction", [self.attention_direction])
        check(self.clips_per_step >= 1, "clips_per_step", self.clips_per_step, "must be >= 1")
        check(self.clips_per_step == 1 or self.attention.attention == "dense", "clips_per_step", self.clips_per_step,
              "stacks clips for dense attention only (sparse layouts are per clip): set attention.attention=dense or 1")  # fmt: skip
        check(bool(self.model.model_dir), "model.model_dir", self.model.model_dir,
              "set it to the model folder the pretrain_vae stage wrote (its run.output_dir/model)")  # fmt: skip
        check(self.model.unianimate_checkpoint is None, "model.unianimate_checkpoint", self.model.unianimate_checkpoint,
              "must be null: pretraining starts from the model folder's weights")  # fmt: skip


@dataclass
class VaeDataConfig:
    # Dataset folder with videos/<name>.mp4 (what data_process reads).
    dataset_dir: str = "data/train"
    # Videos held in memory to sample from (null = all of them).
    max_videos: Optional[int] = None
    # Video frames per training sample (4k + 1) and the square crop side in pixels (a multiple of 8).
    num_frames: int = 17
    crop: int = 128
    # Samples per optimiser step.
    batch_size: int = 8

    def validate(self) -> None:
        check(self.num_frames >= 1 and (self.num_frames - 1) % TEMPORAL_STRIDE == 0, "num_frames", self.num_frames,
              f"must be {TEMPORAL_STRIDE}k + 1")  # fmt: skip
        check(self.crop >= 8 and self.crop % 8 == 0, "crop", self.crop, "must be a positive multiple of 8")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        check(self.max_videos is None or self.max_videos >= 1, "max_videos", self.max_videos, "must be >= 1 or null")


@dataclass
class VaeLossConfig:
    # Reconstruction: weights of the mean absolute and mean squared pixel errors (pixels in [-1, 1]).
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    # Keeps the normalised latents (what the DiT sees) at unit scale: weight of (rms(z) - 1)^2.
    latent_scale_weight: float = 0.1

    def validate(self) -> None:
        for key in ("l1_weight", "mse_weight", "latent_scale_weight"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")


@dataclass
class VaePretrainConfig:
    """The Wan VAE from scratch on a dataset's videos; writes run.output_dir/model/, a complete model folder (the
    trained VAE, and the DiT and text encoder with the random weights of run.seed) that data_process and pretrain
    read."""

    task: str = "pretrain_vae"
    data: VaeDataConfig = field(default_factory=VaeDataConfig)
    # model_size and device of the networks; model_dir null: everything starts random (train_encoder true), else
    # the model folder whose VAE the decoder is fine-tuned from (train_encoder false; its DiT and text encoder are
    # copied into the written folder).
    model: WanModelConfig = field(default_factory=lambda: WanModelConfig(model_size="mini", model_dir=None))
    # False: only the decoder side (conv2 and the decoder) trains and the encoder is frozen, so the latents, and
    # every DiT trained on them, stay valid: e.g. to teach the decoder clips longer than the VAE was trained on.
    train_encoder: bool = True
    # Truncated backpropagation through time (train_encoder false only): each clip's latent frames are decoded as
    # this many consecutive pieces, the decoder's causal caches carried from one piece into the next but detached
    # (no gradient crosses a boundary), each piece's loss backpropagated before the next is decoded: a long clip
    # trains the caches' later states in the memory of one piece. 1: the whole clip at once.
    decoder_pieces: int = 1
    loss: VaeLossConfig = field(default_factory=VaeLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=3e-4))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/vae", gradient_checkpointing=False))

    def validate(self) -> None:
        if self.train_encoder:
            check(self.model.model_dir is None, "model.model_dir", self.model.model_dir,
                  "must be null: the whole VAE is trained from scratch (train_encoder=false fine-tunes a folder's decoder)")  # fmt: skip
        else:
            check(bool(self.model.model_dir), "model.model_dir", self.model.model_dir,
                  "set it to the model folder whose VAE decoder is fine-tuned (train_encoder=false)")  # fmt: skip
        latent_frames = (self.data.num_frames - 1) // TEMPORAL_STRIDE + 1
        check(1 <= self.decoder_pieces <= latent_frames, "decoder_pieces", self.decoder_pieces,
              f"must be between 1 and the {latent_frames} latent frames of data.num_frames={self.data.num_frames}")  # fmt: skip
        check(self.decoder_pieces == 1 or not self.train_encoder, "decoder_pieces", self.decoder_pieces,
              "must be 1 when train_encoder is true (the pieces share the encoder's graph); set train_encoder=false")  # fmt: skip


@dataclass
class TaeDistillConfig:
    """A TAE decoder (iasa.video.tae) fitted to the VAE of a model folder: every step VAE-encodes random clips of
    the dataset's videos and trains the TAE to decode the latents to the frames the VAE decodes from them. Writes
    run.output_dir/tae.safetensors in the taew2_1 key layout (what speed.tae_checkpoint reads)."""

    task: str = "distill_tae"
    # The clips sampled (as pretrain_vae's); num_frames 4k + 1 gives k + 1 latent frames per clip.
    data: VaeDataConfig = field(default_factory=VaeDataConfig)
    # The model folder whose VAE is distilled (its other networks are not loaded), e.g. the pretrain_vae stage's
    # run.output_dir/model or the pretrain stage's, which holds a copy of that VAE.
    model: WanModelConfig = field(default_factory=lambda: WanModelConfig(model_size="mini", model_dir=None))
    # Widths of the TAE: a key of iasa.video.tae.TAE_ARCHITECTURES.
    tae_architecture: str = "mini"
    # Pixel loss between the TAE's frames and the VAE's (iasa.train.tae_distill.PIXEL_LOSSES): "l1" or "mse".
    loss: str = "l1"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-3, weight_decay=0.0))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/tae", gradient_checkpointing=False))

    def validate(self) -> None:
        from iasa.train.tae_distill import PIXEL_LOSSES
        from iasa.video.tae import TAE_ARCHITECTURES

        check(bool(self.model.model_dir), "model.model_dir", self.model.model_dir,
              "set it to the model folder holding the VAE to distil (e.g. outputs/miniature/teacher/model)")  # fmt: skip
        check_choice("tae_architecture", self.tae_architecture, sorted(TAE_ARCHITECTURES))
        check_choice("loss", self.loss, sorted(PIXEL_LOSSES))


SCHEMAS = {
    "data_process": DataProcessConfig, "train": FinetuneConfig, "distill": DistillConfig, "pretrain": PretrainConfig,
    "pretrain_vae": VaePretrainConfig, "distill_tae": TaeDistillConfig,
}  # fmt: skip
