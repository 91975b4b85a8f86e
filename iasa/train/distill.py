"""The distill task: DMD (distribution matching distillation) of the fine-tuned teacher into a few-step,
causal sparse-attention student, with the region-weighted loss on decoded frames (paper section 3.3).

One DiT holds three LoRA adapters on the same frozen base weights:
    teacher    the fine-tuned LoRA, frozen: the real score s_real (bidirectional attention, optional cfg)
    generator  the student: few-step sampler with causal ("past") sparse attention, trained by DMD + region
    critic     the fake score s_fake: trained with the flow-matching loss on generator samples
Both trained adapters start as copies of the teacher. The pose guider is the teacher's, frozen.

Generator loss (DMD2's normalisation): with x0 the generator's sample, x_t its noised copy and
x0_real / x0_fake the teacher's and critic's clean predictions from x_t, the DMD gradient direction is
g = (x0_fake - x0_real) / mean|x0 - x0_real|, applied through 0.5 ||x0 - sg(x0 - g)||^2, whose gradient
with respect to x0 is g / numel.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast
from diffsynth.models.wan_video_vae import WanVideoVAE
from einops import rearrange
from tqdm import tqdm

from iasa.config import validate_config
from iasa.train.adapters import (
    adapter_parameters,
    copy_adapter,
    freeze_adapter_in_base_dtype,
    load_safetensors,
    save_safetensors_atomic,
    set_trainable,
    use_adapter,
)
from iasa.train.cache import CacheError, ClipBatch, ClipMemory, ClipOrder, cached_pose_style, list_cached
from iasa.train.config import DistillConfig
from iasa.train.finetune import LORA_FILE, POSE_GUIDER_FILE, flow_matching_loss, layout_for
from iasa.train.flow_matching import TrainingSchedule, add_noise, flow_to_clean
from iasa.train.model import PoseDiT
from iasa.train.region_loss import RegionLoss, decoded_frame_indices, region_masks
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
from iasa.video.lora import inject_lora, load_lora, lora_pose_style, save_lora
from iasa.video.vae_decode import decode_with_gradients

TEACHER, GENERATOR, CRITIC = "teacher", "generator", "critic"


def dmd_loss(sample: torch.Tensor, real_clean: torch.Tensor, fake_clean: torch.Tensor) -> torch.Tensor:
    """0.5 ||x0 - sg(x0 - g)||^2 (mean) with g = (fake - real) / mean|x0 - real|: its gradient with respect
    to the sample x0 is g / x0.numel(), the DMD direction -(s_real - s_fake) in x0 space."""
    with torch.no_grad():
        normaliser = (sample.float() - real_clean.float()).abs().mean().clamp_min(1e-6)
        target = sample.float() - (fake_clean.float() - real_clean.float()) / normaliser
    return 0.5 * F.mse_loss(sample.float(), target)


class Distiller:
    """The three roles on one model, and the two losses; vae decodes frames for the region loss (None when
    config.region.weight is 0)."""

    def __init__(self, config: DistillConfig, model: PoseDiT, vae: WanVideoVAE | None = None) -> None:
        self.config, self.model, self.vae = config, model, vae
        self.schedule = TrainingSchedule.from_config(config.flow)
        self.sigmas = list(config.generator_sigmas)
        if not self.sigmas or any(b >= a for a, b in zip(self.sigmas, self.sigmas[1:])) or not 0 < self.sigmas[-1] <= 1:
            raise ValueError(f"generator_sigmas must decrease within (0, 1], got {self.sigmas}")
        self.region_loss = RegionLoss(config.region) if config.region.weight > 0 else None

    def predict(
        self, adapter: str, noisy: torch.Tensor, sigma: float, batch: ClipBatch, direction: str,
        context: torch.Tensor | None = None, with_pose: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        """x0 prediction of one adapter; noisy (1, 16, T, h, w) at noise level sigma; context and with_pose as in
        PoseDiT.forward."""
        use_adapter(self.model.dit, adapter)
        timestep = torch.full((1,), sigma * self.config.flow.num_train_timesteps, device=noisy.device)
        layout = layout_for(batch, self.config.attention.attention, direction)
        flow = self.model(noisy, timestep, batch, layout, context=context, with_pose=with_pose)
        return flow_to_clean(noisy, flow, sigma)

    def teacher_clean(self, noisy: torch.Tensor, sigma: float, batch: ClipBatch) -> torch.Tensor:
        """The real score's x0: with cfg, UniAnimate's negative pass (the negative prompt, no pose features; y with
        the reference pose and the CLIP tokens kept; FlowConditions.unconditional), as sampling runs it."""
        direction, scale = self.config.teacher_direction, self.config.teacher_cfg_scale
        positive = self.predict(TEACHER, noisy, sigma, batch, direction)
        if scale == 1.0:
            return positive
        negative = self.predict(TEACHER, noisy, sigma, batch, direction, context=batch.negative_context, with_pose=False)
        return negative + scale * (positive - negative)

    def generate(self, batch: ClipBatch, with_grad: bool) -> torch.Tensor:
        """A generator sample x0 (1, 16, T, h, w): from pure noise, a random number k of the few-step
        sampler's Euler steps run without gradients, then one x0 prediction (with gradients if asked)."""
        # Every process takes process 0's number of steps: under FSDP each forward is a collective (all-gathers
        # of the shards), so all processes must run as many; data parallel does the same, so both train alike.
        last = int(broadcast(torch.randint(len(self.sigmas), (1,)).to(batch.latents.device), from_process=0).item())
        noisy = torch.randn_like(batch.latents)
        with torch.no_grad():
            for index in range(last):
                clean = self.predict(GENERATOR, noisy, self.sigmas[index], batch, self.config.student_direction)
                following = self.sigmas[index + 1]
                noisy = add_noise(clean, (noisy - (1 - self.sigmas[index]) * clean) / self.sigmas[index], following)
        with torch.set_grad_enabled(with_grad):
            return self.predict(GENERATOR, noisy, self.sigmas[last], batch, self.config.student_direction)

    def critic_loss(self, batch: ClipBatch) -> torch.Tensor:
        """Flow matching of the critic on a generator sample (the fake distribution)."""
        with torch.no_grad():
            sample = self.generate(batch, with_grad=False)
        use_adapter(self.model.dit, CRITIC)
        layout = layout_for(batch, self.config.attention.attention, self.config.teacher_direction)
        return flow_matching_loss(self.model, sample, batch, layout, self.schedule, self.config.flow)

    def generator_loss(self, batch: ClipBatch) -> dict[str, torch.Tensor]:
        sample = self.generate(batch, with_grad=True)
        index = self.schedule.sample_index(self.config.flow.min_timestep_fraction, self.config.flow.max_timestep_fraction)
        sigma = self.schedule.sigmas[index].item()
        with torch.no_grad():
            noisy = add_noise(sample.detach(), torch.randn_like(sample), sigma)
            real = self.teacher_clean(noisy, sigma, batch)
            fake = self.predict(CRITIC, noisy, sigma, batch, self.config.teacher_direction)
        # Checkpointed generator blocks are recomputed in backward with the active adapter of that moment (peft
        # keeps it on the layers): make it the generator's again. The layout travels with the blocks' arguments.
        use_adapter(self.model.dit, GENERATOR)
        losses = {"dmd": dmd_loss(sample, real, fake)}
        if self.region_loss is not None:
            losses["region"] = self.region_term(sample, batch)
        losses["total"] = losses["dmd"] + self.config.region.weight * losses.get("region", 0.0)
        return losses

    def region_term(self, sample: torch.Tensor, batch: ClipBatch) -> torch.Tensor:
        """Region loss between decoded generator frames and decoded ground-truth frames of a random run of
        region.latent_frames latent frames."""
        latent_frames = sample.shape[2]
        run = min(self.config.region.latent_frames, latent_frames)
        first = int(torch.randint(latent_frames - run + 1, (1,)).item())
        decoded = decode_with_gradients(self.vae, sample[:, :, first : first + run])
        with torch.no_grad():
            reference = decode_with_gradients(self.vae, batch.latents[:, :, first : first + run])
        frames = decoded_frame_indices(first, run)
        height, width = decoded.shape[-2:]
        keypoints = batch.keypoints.slice_frames(frames[0], frames[-1] + 1)
        if batch.layout_rule is None:
            raise ValueError(f"clip {batch.name} carries no layout rule to draw the region-loss masks with")
        masks = region_masks(keypoints, self.region_loss.regions, (height, width), batch.layout_rule)
        to_frames = "1 c f h w -> f c h w"
        return self.region_loss(rearrange(reference.float(), to_frames), rearrange(decoded.float(), to_frames), masks.to(sample.device))


def run_distill(config: DistillConfig, components: WanComponents) -> Path:
    """Distil, checkpointing every run.checkpoint_every generator steps; returns the folder of the student LoRA.
    components: the frozen DiT and pose guider, and the VAE when the region loss is on
    (iasa.train.model.load_training_components). Writes run.output_dir/lora.safetensors (the student) and
    pose_guider.safetensors (the teacher's, frozen)."""
    validate_config(config)  # load_config did already; here for configs built in code
    run = config.run
    accelerator = make_accelerator(run)
    start_run(accelerator, config, run, project="iasa-distill")
    device = accelerator.device
    model = PoseDiT(
        components.dit, components.pose_guider, components.dtype, config.attention.backend,
        run.gradient_checkpointing, run.gradient_checkpointing_offload,
    )  # fmt: skip
    dit = model.dit
    load_lora(config.teacher_lora, dit, TEACHER)
    teacher = dit.peft_config[TEACHER]
    for name in (GENERATOR, CRITIC):
        inject_lora(dit, teacher.r, teacher.lora_alpha, sorted(teacher.target_modules), name)
    copy_adapter(dit, TEACHER, GENERATOR)
    copy_adapter(dit, TEACHER, CRITIC)
    freeze_adapter_in_base_dtype(dit, TEACHER)
    if config.teacher_pose_guider:
        guider = load_safetensors(config.teacher_pose_guider, "teacher_pose_guider")
        model.pose_guider.load_state_dict(guider)
    if uses_fsdp(accelerator):  # after every adapter holds its weights: fully_shard replaces the parameters
        model = shard_pose_dit(model, device, accelerator.num_processes)
        accelerator.print(f"FSDP: DiT and pose guider sharded over {accelerator.num_processes} processes")
    generator_params = adapter_parameters(dit, GENERATOR)
    critic_params = adapter_parameters(dit, CRITIC)

    distiller = Distiller(config, model, components.vae)
    if distiller.region_loss is not None:
        distiller.region_loss.to(device)
    # One updater per trained adapter (under DeepSpeed one engine each, both over the one DiT).
    generator_update = make_update(
        accelerator, list(generator_params.values()), config.optim, config.optim.learning_rate, run
    )
    critic_update = make_update(
        accelerator, list(critic_params.values()), config.optim, config.critic_learning_rate, run
    )
    updates = {GENERATOR: generator_update, CRITIC: critic_update}
    named = {f"generator.{k}": v for k, v in generator_params.items()} | {f"critic.{k}": v for k, v in critic_params.items()}
    states = generator_update.states(prefix=f"{GENERATOR}_") | critic_update.states(prefix=f"{CRITIC}_")
    built_with = {  # the student and critic copy the teacher LoRA's shape
        "teacher_lora rank": teacher.r, "teacher_lora alpha": teacher.lora_alpha,
        "teacher_lora targets": sorted(teacher.target_modules),
    }  # fmt: skip
    checkpointer = Checkpointer(accelerator, run, named, states, config, built_with)
    seed_process(accelerator, run)
    start = checkpointer.resume()

    cache_dir = Path(config.cache_dir)
    keys = list_cached(cache_dir)
    pose_style = cached_pose_style(cache_dir, keys)
    if (teacher_style := lora_pose_style(config.teacher_lora)) not in (None, pose_style):
        raise CacheError(
            f"teacher_lora {config.teacher_lora} was trained on {teacher_style!r} pose images, {cache_dir} holds "
            f"{pose_style!r} ones; distill on the cache the teacher was trained on"
        )
    order = ClipOrder(keys, run.seed, accelerator.process_index, accelerator.num_processes)
    accumulation = run.gradient_accumulation_steps
    phases = [CRITIC] * config.critic_steps_per_generator_step + [GENERATOR]
    clips = ClipMemory(cache_dir, device, config.cache_in_memory)
    time_limit = TimeLimit(accelerator, run.time_limit_s)
    micro_batches_per_step = len(phases) * accumulation
    progress = tqdm(range(start, run.max_steps), initial=start, total=run.max_steps, desc="distill", disable=not accelerator.is_main_process)
    for step in progress:
        logs = {}
        for phase_index, phase in enumerate(phases):
            update = updates[phase]
            set_trainable([dit, model.pose_guider], update.parameters)
            totals: dict[str, float] = {}
            for micro in range(accumulation):
                key = order.key(step * micro_batches_per_step + phase_index * accumulation + micro)
                batch = clips.read(key)
                with autocast(accelerator, run):
                    losses = {"total": distiller.critic_loss(batch)} if phase == CRITIC else distiller.generator_loss(batch)
                update.backward(losses["total"] / accumulation)
                for name, value in losses.items():
                    totals[name] = totals.get(name, 0.0) + float(value.detach()) / accumulation
            totals["grad_norm"] = update.step()
            logs.update({f"{phase}/{name}": value for name, value in totals.items()})
        progress.set_postfix(dmd=f"{logs[f'{GENERATOR}/dmd']:.4f}", critic=f"{logs[f'{CRITIC}/total']:.4f}" if config.critic_steps_per_generator_step else "-")
        if end_step(step + 1, run, logs, accelerator, checkpointer, time_limit):
            break

    output_dir = Path(run.output_dir)
    generator = gather(generator_params)  # collective under FSDP: every process gathers, the main one writes
    guider = gather(dict(model.pose_guider.named_parameters()))
    if accelerator.is_main_process:
        save_lora(output_dir / LORA_FILE, dit, GENERATOR, generator, pose_style=pose_style)
        # The frozen pose guider the student was distilled with, so that the run folder holds all it runs with.
        save_safetensors_atomic({key: value.detach().cpu() for key, value in guider.items()}, output_dir / POSE_GUIDER_FILE)
    accelerator.end_training()
    return output_dir
