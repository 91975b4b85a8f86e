"""The train task: sparse-attention LoRA fine-tune of the pose-driven Wan2.1-I2V with the flow-matching loss.

Trained: one LoRA adapter ("default") on the DiT's q, k, v, o, ffn.0, ffn.2 layers and, optionally, the
pose guider. Every step reads one cached clip per micro-batch, drops conditions as UniAnimate does and
regresses the flow at a random noise level of Wan's training schedule.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from iasa.attention.layout import SparseLayout
from iasa.config import validate_config
from iasa.train.adapters import adapter_parameters, save_safetensors_atomic, set_trainable, use_adapter
from iasa.train.cache import ClipBatch, ClipOrder, cached_pose_style, list_cached, read_clip
from iasa.train.config import ConditionDropoutConfig, FinetuneConfig, FlowConfig
from iasa.train.flow_matching import TrainingSchedule, add_noise, flow_target
from iasa.train.model import PoseDiT
from iasa.train.runtime import Checkpointer, autocast, make_accelerator, make_update, seed_process, start_run
from iasa.train.sharding import gather, shard_pose_dit, uses_fsdp
from iasa.video.assembly import WanComponents
from iasa.video.lora import inject_lora, load_lora, save_lora

ADAPTER = "default"
LORA_FILE = "lora.safetensors"
POSE_GUIDER_FILE = "pose_guider.safetensors"


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
    with_pose: bool = True,
) -> torch.Tensor:
    """Weighted MSE between the predicted and true flow at a random noise level; clean (1, 16, T, h, w);
    with_pose False: without pose features (a dropped pose, drop_conditions)."""
    index = schedule.sample_index(flow.min_timestep_fraction, flow.max_timestep_fraction)
    sigma = schedule.sigmas[index].item()
    noise = torch.randn_like(clean)
    noisy = add_noise(clean, noise, sigma)
    timestep = schedule.timesteps[index : index + 1].to(clean.device)
    prediction = model(noisy, timestep, batch, layout, with_pose=with_pose)
    return F.mse_loss(prediction.float(), flow_target(clean, noise).float()) * schedule.weights[index].item()


def layout_for(batch: ClipBatch, attention: str, direction: str) -> SparseLayout | None:
    if attention == "dense":
        return None
    if direction not in batch.layouts:
        raise ValueError(
            f"clip {batch.name} has no cached '{direction}' layout (cached: {sorted(batch.layouts)}); "
            "add it to layout_directions of the data_process config and rerun data_process"
        )
    return batch.layouts[direction]


def trained_tensors(model: PoseDiT, train_pose_guider: bool) -> dict[str, torch.nn.Parameter]:
    """The trained parameters by checkpoint name: "lora.<file key>" and, if trained, "pose_guider.<key>"."""
    named = {f"lora.{key}": parameter for key, parameter in adapter_parameters(model.dit, ADAPTER).items()}
    if train_pose_guider:
        named.update({f"pose_guider.{key}": parameter for key, parameter in model.pose_guider.named_parameters()})
    return named


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries named prefix + key, by key."""
    return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}


def run_finetune(config: FinetuneConfig, components: WanComponents) -> Path:
    """Train, checkpointing every run.checkpoint_every steps; returns the folder of the final LoRA. components:
    the frozen DiT and pose guider (iasa.train.model.load_training_components)."""
    validate_config(config)  # load_config did already; here for configs built in code
    run = config.run
    accelerator = make_accelerator(run)
    start_run(accelerator, config, run, project="iasa-finetune")
    device = accelerator.device
    model = PoseDiT(
        components.dit, components.pose_guider, components.dtype, config.attention.backend,
        run.gradient_checkpointing, run.gradient_checkpointing_offload,
    )  # fmt: skip

    inject_lora(model.dit, config.lora.rank, config.lora.alpha, config.lora.targets, ADAPTER)
    if config.lora.init_path:
        load_lora(config.lora.init_path, model.dit, ADAPTER)
    use_adapter(model.dit, ADAPTER)
    if config.train_pose_guider:
        model.pose_guider.float()  # trained weights stay float32 (autocast computes in bf16)
    set_trainable([model.dit, model.pose_guider], list(trained_tensors(model, config.train_pose_guider).values()))
    if uses_fsdp(accelerator):
        model = shard_pose_dit(model, device, accelerator.num_processes)
        accelerator.print(f"FSDP: DiT and pose guider sharded over {accelerator.num_processes} processes")
    named = trained_tensors(model, config.train_pose_guider)  # after sharding: fully_shard replaces parameters
    trained = list(named.values())

    update = make_update(accelerator, trained, config.optim, config.optim.learning_rate, run)
    built_with = {
        "lora.rank": config.lora.rank, "lora.alpha": config.lora.alpha, "lora.targets": sorted(config.lora.targets),
        "train_pose_guider": config.train_pose_guider,
    }  # fmt: skip
    checkpointer = Checkpointer(accelerator, run, named, update.states(), config, built_with)
    seed_process(accelerator, run)
    start = checkpointer.resume()

    schedule = TrainingSchedule.from_config(config.flow)
    cache_dir = Path(config.cache_dir)
    keys = list_cached(cache_dir)
    pose_style = cached_pose_style(cache_dir, keys)  # recorded in the LoRA, so inference draws the same
    order = ClipOrder(keys, run.seed, accelerator.process_index, accelerator.num_processes)
    accumulation = run.gradient_accumulation_steps
    progress = tqdm(range(start, run.max_steps), initial=start, total=run.max_steps, desc="train", disable=not accelerator.is_main_process)
    for step in progress:
        total = 0.0
        for micro in range(accumulation):
            batch = read_clip(cache_dir, order.key(step * accumulation + micro)).to(device)
            batch, with_pose = drop_conditions(batch, config.dropout)
            layout = layout_for(batch, config.attention.attention, config.attention_direction)
            with autocast(accelerator, run):
                loss = flow_matching_loss(model, batch.latents, batch, layout, schedule, config.flow, with_pose)
            update.backward(loss / accumulation)
            total += loss.item() / accumulation
        grad_norm = update.step()
        progress.set_postfix(loss=f"{total:.4f}")
        if (step + 1) % run.log_every == 0 or step + 1 == run.max_steps:
            accelerator.log({"loss": total, "grad_norm": grad_norm, "lr": update.learning_rate()}, step=step + 1)
        checkpointer.maybe_save(step + 1, final=step + 1 == run.max_steps)

    output_dir = Path(run.output_dir)
    final = gather(named)  # collective under FSDP: every process gathers, the main one writes
    if accelerator.is_main_process:
        save_lora(output_dir / LORA_FILE, model.dit, ADAPTER, with_prefix(final, "lora."), pose_style=pose_style)
        if config.train_pose_guider:
            save_safetensors_atomic(with_prefix(final, "pose_guider."), output_dir / POSE_GUIDER_FILE)
    accelerator.end_training()
    return output_dir
