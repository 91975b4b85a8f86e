"""The train task: sparse-attention LoRA fine-tune of the pose-driven Wan2.1-I2V with the flow-matching loss,
and the pretrain task, the same loop on every DiT parameter (a dense teacher from scratch: the miniature).

Trained (train): one LoRA adapter ("default") on the DiT's q, k, v, o, ffn.0, ffn.2 layers and, optionally, the
pose guider; (pretrain) every DiT parameter and the pose guider, written as a model folder. Every step reads one
cached clip per micro-batch, drops conditions as UniAnimate does and regresses the flow at a random noise level
of Wan's training schedule.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import torch
from einops import rearrange
from tqdm import tqdm

from iasa.attention.layout import SparseLayout, without_regions
from iasa.config import validate_config
from iasa.train.adapters import adapter_parameters, save_safetensors_atomic, set_trainable, use_adapter
from iasa.train.cache import ClipBatch, ClipMemory, ClipOrder, cached_pose_style, list_cached, stack_clips
from iasa.train.config import ConditionDropoutConfig, FinetuneConfig, FlowConfig, PretrainConfig
from iasa.train.flow_matching import TrainingSchedule, add_noise, flow_target
from iasa.train.model import PoseDiT
from iasa.train.model_folder import save_dit
from iasa.train.runtime import (
    Checkpointer,
    TimeLimit,
    autocast,
    end_step,
    make_accelerator,
    make_update,
    seed_process,
    start_run,
)
from iasa.train.sharding import gather, shard_pose_dit, uses_fsdp
from iasa.video.assembly import WanComponents
from iasa.video.lora import inject_lora, load_lora, load_pose_guider, save_lora
from iasa.video.model_files import locate_model_files

ADAPTER = "default"
LORA_FILE = "lora.safetensors"
POSE_GUIDER_FILE = "pose_guider.safetensors"
# The model folder the pretrain task writes into its run folder.
MODEL_FOLDER = "model"


def drop_conditions(batch: ClipBatch, config: ConditionDropoutConfig) -> tuple[ClipBatch, bool]:
    """Condition dropout, (batch, with_pose): with probability config.pose the DiT gets no pose features
    (with_pose False: the state the cfg negative pass asks for, FlowConditions.unconditional), and with
    probability config.image the CLIP tokens and the I2V condition y are zeroed (independent draws from the
    torch RNG).

    UniAnimate-DiT's train_unianimate_wan.py zeroes the pose embeddings (the guider's outputs, not its input
    images, which its biases would turn into non-zero features) and, in the same draw, the reference-pose
    embedding; here y keeps the reference-pose embedding when the pose is dropped, because its inference
    negative pass keeps it (wan_video.py adds it to y before the loop), and the model must learn the
    unconditional it is asked for. A zeroed y still receives the reference-pose embedding, as UniAnimate's.
    """
    drop_pose = bool(torch.rand(()) < config.pose)
    drop_image = bool(torch.rand(()) < config.image)
    if drop_image:
        batch = replace(batch, clip_feature=torch.zeros_like(batch.clip_feature), y=torch.zeros_like(batch.y))
    return batch, not drop_pose


def flow_matching_loss(
    model: PoseDiT,
    clean: torch.Tensor,
    batch: ClipBatch,
    layout: SparseLayout | None,
    schedule: TrainingSchedule,
    flow: FlowConfig,
    with_pose: bool | torch.Tensor = True,
) -> torch.Tensor:
    """Weighted MSE between the predicted and true flow, each of the b clips of clean (b, 16, T, h, w) at its own
    random noise level (the mean over clips of each clip's MSE times its level's weight); with_pose False, or
    False in a (b,) bool mask: without pose features (a dropped pose, drop_conditions)."""
    indices = schedule.sample_indices(clean.shape[0], flow.min_timestep_fraction, flow.max_timestep_fraction)
    sigma = rearrange(schedule.sigmas[indices].to(clean.device), "b -> b 1 1 1 1")
    noise = torch.randn_like(clean)
    noisy = add_noise(clean, noise, sigma).to(clean.dtype)
    timestep = schedule.timesteps[indices].to(clean.device)
    prediction = model(noisy, timestep, batch, layout, with_pose=with_pose)
    per_clip = (prediction.float() - flow_target(clean, noise).float()).pow(2).mean(dim=(1, 2, 3, 4))
    return (per_clip * schedule.weights[indices].to(clean.device)).mean()


def layout_for(batch: ClipBatch, attention: str, direction: str, local_regions: bool = True) -> SparseLayout | None:
    """The cached layout of `direction` (None for dense attention); local_regions False drops its regions."""
    if attention == "dense":
        return None
    if direction not in batch.layouts:
        raise ValueError(
            f"clip {batch.name} has no cached '{direction}' layout (cached: {sorted(batch.layouts)}); "
            "add it to layout_directions of the data_process config and rerun data_process"
        )
    layout = batch.layouts[direction]
    return layout if local_regions else without_regions(layout)


def trained_tensors(model: PoseDiT, train_pose_guider: bool, full: bool = False) -> dict[str, torch.nn.Parameter]:
    """The trained parameters by checkpoint name: "lora.<file key>" (full: "dit.<DiT key>", every parameter)
    and, if trained, "pose_guider.<key>"."""
    if full:
        named = {f"dit.{key}": parameter for key, parameter in model.dit.named_parameters()}
    else:
        named = {f"lora.{key}": parameter for key, parameter in adapter_parameters(model.dit, ADAPTER).items()}
    if train_pose_guider:
        named.update({f"pose_guider.{key}": parameter for key, parameter in model.pose_guider.named_parameters()})
    return named


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries named prefix + key, by key."""
    return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}


def write_model_folder(dit: torch.nn.Module, source: Path, target: Path, model_size: str) -> None:
    """target: a copy of the model folder `source` (its VAE and text encoder files) with this DiT."""
    from iasa.video.config import architecture

    files = locate_model_files(source, architecture(model_size))
    target.mkdir(parents=True, exist_ok=True)
    for path in (files.text_encoder, files.vae):
        shutil.copyfile(path, target / path.name)
    save_dit(dit, target)


def run_finetune(config: FinetuneConfig | PretrainConfig, components: WanComponents) -> Path:
    """Train, checkpointing every run.checkpoint_every steps; returns the run folder (the final LoRA, or for
    pretrain the model folder model/, and the pose guider). components: the frozen DiT and pose guider
    (iasa.train.model.load_training_components)."""
    validate_config(config)  # load_config did already; here for configs built in code
    run = config.run
    pretrain = isinstance(config, PretrainConfig)
    train_pose_guider = pretrain or config.train_pose_guider
    accelerator = make_accelerator(run)
    start_run(accelerator, config, run, project="iasa-pretrain" if pretrain else "iasa-finetune")
    device = accelerator.device
    model = PoseDiT(
        components.dit, components.pose_guider, components.dtype, config.attention.backend,
        run.gradient_checkpointing, run.gradient_checkpointing_offload,
    )  # fmt: skip

    if train_pose_guider:
        model.pose_guider.float()  # trained weights stay float32 (autocast computes in bf16)
    if pretrain:
        model.dit.float()
    else:
        inject_lora(model.dit, config.lora.rank, config.lora.alpha, config.lora.targets, ADAPTER)
        if config.lora.init_path:
            load_lora(config.lora.init_path, model.dit, ADAPTER)
        use_adapter(model.dit, ADAPTER)
    if config.pose_guider_init:  # loaded in the guider's dtype: float32 when trained
        load_pose_guider(config.pose_guider_init, model.pose_guider)
    set_trainable([model.dit, model.pose_guider], list(trained_tensors(model, train_pose_guider, pretrain).values()))
    if uses_fsdp(accelerator):
        model = shard_pose_dit(model, device, accelerator.num_processes)
        accelerator.print(f"FSDP: DiT and pose guider sharded over {accelerator.num_processes} processes")
    named = trained_tensors(model, train_pose_guider, pretrain)  # after sharding: fully_shard replaces parameters
    trained = list(named.values())

    update = make_update(accelerator, trained, config.optim, config.optim.learning_rate, run)
    built_with = (
        {"model.model_size": config.model.model_size}
        if pretrain
        else {
            "lora.rank": config.lora.rank, "lora.alpha": config.lora.alpha, "lora.targets": sorted(config.lora.targets),
            "train_pose_guider": config.train_pose_guider,
        }
    )  # fmt: skip
    checkpointer = Checkpointer(accelerator, run, named, update.states(), config, built_with)
    seed_process(accelerator, run)
    start = checkpointer.resume()

    schedule = TrainingSchedule.from_config(config.flow)
    cache_dir = Path(config.cache_dir)
    keys = list_cached(cache_dir)
    pose_style = cached_pose_style(cache_dir, keys)  # recorded in the LoRA, so inference draws the same
    order = ClipOrder(keys, run.seed, accelerator.process_index, accelerator.num_processes)
    clips = ClipMemory(cache_dir, device, config.cache_in_memory)
    accumulation = run.gradient_accumulation_steps
    per_micro = config.clips_per_step if pretrain else 1
    local_regions = True if pretrain else config.local_regions
    time_limit = TimeLimit(accelerator, run.time_limit_s)
    progress = tqdm(range(start, run.max_steps), initial=start, total=run.max_steps, desc=config.task, disable=not accelerator.is_main_process)
    for step in progress:
        total = 0.0
        for micro in range(accumulation):
            first = (step * accumulation + micro) * per_micro
            dropped = [drop_conditions(clips.read(order.key(first + index)), config.dropout) for index in range(per_micro)]
            batch = stack_clips([clip for clip, _ in dropped])
            with_pose = dropped[0][1] if per_micro == 1 else torch.tensor([keep for _, keep in dropped], device=device)
            layout = layout_for(batch, config.attention.attention, config.attention_direction, local_regions)
            with autocast(accelerator, run):
                loss = flow_matching_loss(model, batch.latents, batch, layout, schedule, config.flow, with_pose)
            update.backward(loss / accumulation)
            total += loss.item() / accumulation
        grad_norm = update.step()
        progress.set_postfix(loss=f"{total:.4f}")
        logs = {"loss": total, "grad_norm": grad_norm, "lr": update.learning_rate()}
        if end_step(step + 1, run, logs, accelerator, checkpointer, time_limit):
            break

    output_dir = Path(run.output_dir)
    final = gather(named)  # collective under FSDP: every process gathers, the main one writes
    if accelerator.is_main_process:
        if pretrain:
            write_model_folder(model.dit, Path(config.model.model_dir), output_dir / MODEL_FOLDER, config.model.model_size)
        else:
            save_lora(output_dir / LORA_FILE, model.dit, ADAPTER, with_prefix(final, "lora."), pose_style=pose_style)
        if train_pose_guider:
            save_safetensors_atomic(with_prefix(final, "pose_guider."), output_dir / POSE_GUIDER_FILE)
    accelerator.end_training()
    return output_dir
