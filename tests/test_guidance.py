"""Classifier-free guidance as UniAnimate-DiT runs it: the negative pass has the negative prompt and no pose
features, and keeps y (with the reference-pose embedding) and the CLIP tokens; guidance = nega + cfg (posi -
nega). The expectations call the tiny DiT directly (iasa.video.denoiser.predict_flow) with pose_features None."""

from __future__ import annotations

import functools

import pytest
import torch

from iasa.train.cache import ClipBatch
from iasa.train.config import DistillConfig, FlowConfig
from iasa.train.distill import TEACHER, Distiller
from iasa.train.finetune import flow_matching_loss
from iasa.train.flow_matching import TrainingSchedule, flow_to_clean
from iasa.train.model import PoseDiT
from iasa.video.assembly import build_random
from iasa.video.attention_patch import patch_self_attention
from iasa.video.config import (
    ARCHITECTURES,
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    AttentionConfig,
    SamplerConfig,
)
from iasa.video.denoiser import FlowConditions, predict_flow
from iasa.video.lora import inject_lora
from iasa.video.sampler import WindowInputs, initial_noise, sample_latents
from iasa.video.windows import Window

pytestmark = pytest.mark.usefixtures("one_thread")

TINY, CPU = ARCHITECTURES["tiny"], torch.device("cpu")
FRAMES, HEIGHT, WIDTH = 3, 4, 6  # latents; pose images are 8x larger, 4 (FRAMES - 1) + 1 video frames


def tiny_networks():
    torch.manual_seed(0)
    dit = build_random("dit", TINY, CPU, torch.float32)
    guider = build_random("pose_guider", TINY, CPU, torch.float32)
    return dit, guider


def clip_batch(seed: int = 1) -> ClipBatch:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return ClipBatch(
        name="clip", latents=randn(1, LATENT_CHANNELS, FRAMES, HEIGHT, WIDTH), context=randn(1, TINY.text_length, TINY.text_dim),
        negative_context=randn(1, TINY.text_length, TINY.text_dim), clip_feature=randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM),
        y=randn(1, CONDITION_CHANNELS, FRAMES, HEIGHT, WIDTH),
        pose_video=torch.rand(1, 3, 4 * (FRAMES - 1) + 1, 8 * HEIGHT, 8 * WIDTH, generator=generator),
        reference_pose=torch.rand(1, 3, 8 * HEIGHT, 8 * WIDTH, generator=generator),
    )  # fmt: skip


def direct_flows(dit, guider, batch: ClipBatch, noisy: torch.Tensor, timestep: torch.Tensor):
    """(positive, negative, negative with the pose kept) straight from the DiT."""
    features = guider.pose_features(batch.pose_video)
    y = batch.y + guider.reference_condition(batch.reference_pose)
    positive = predict_flow(dit, noisy, timestep, FlowConditions(batch.context, batch.clip_feature, y, features))
    negative = predict_flow(dit, noisy, timestep, FlowConditions(batch.negative_context, batch.clip_feature, y, None))
    with_pose = predict_flow(dit, noisy, timestep, FlowConditions(batch.negative_context, batch.clip_feature, y, features))
    return positive, negative, with_pose


def test_unconditional_conditions_drop_only_the_pose_and_the_prompt():
    conditions = FlowConditions(torch.ones(1), torch.full((1,), 2.0), torch.full((1,), 3.0), torch.full((1,), 4.0))
    negative = conditions.unconditional(torch.zeros(1))
    assert negative.pose_features is None and torch.equal(negative.context, torch.zeros(1))
    assert negative.clip_feature is conditions.clip_feature and negative.y is conditions.y


@torch.no_grad()
def test_sampler_negative_pass_is_the_flow_without_pose_features():
    dit, guider = tiny_networks()
    patch_self_attention(dit)
    batch = clip_batch()
    features = guider.pose_features(batch.pose_video)
    y = batch.y + guider.reference_condition(batch.reference_pose)
    cfg, seed = 1.5, 4
    windows = [WindowInputs(Window(0, FRAMES), FlowConditions(batch.context, batch.clip_feature, y, features), None)]
    got = sample_latents(
        functools.partial(predict_flow, dit, backend="reference"), windows, batch.negative_context,
        (FRAMES, HEIGHT, WIDTH), SamplerConfig(num_steps=1, cfg_scale=cfg, seed=seed), overlap=0, private=0, progress=False,
    )  # fmt: skip
    noise = initial_noise((1, LATENT_CHANNELS, FRAMES, HEIGHT, WIDTH), seed, CPU, torch.float32)
    positive, negative, with_pose = direct_flows(dit, guider, batch, noise, torch.tensor([1000.0]))  # one step: sigma 1 -> 0
    torch.testing.assert_close(got, noise - (negative + cfg * (positive - negative)), rtol=1e-5, atol=1e-5)
    # The pose features matter to the tiny DiT, so keeping them in the negative pass would be caught.
    kept = noise - (with_pose + cfg * (positive - with_pose))
    assert (got - kept).abs().max() > 1e-3


@torch.no_grad()
def test_teacher_score_uses_the_same_negative_pass():
    dit, guider = tiny_networks()
    model = PoseDiT(dit, guider, torch.float32)  # patches the DiT's self-attention
    inject_lora(dit, 4, 4, adapter_name=TEACHER)
    generator = torch.Generator().manual_seed(9)
    for name, parameter in dit.named_parameters():
        if TEACHER in name and "lora_B" in name:
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    scale, sigma = 1.5, 0.6
    config = DistillConfig(attention=AttentionConfig(attention="dense"), teacher_cfg_scale=scale)
    batch = clip_batch(seed=2)
    noisy = torch.randn(1, LATENT_CHANNELS, FRAMES, HEIGHT, WIDTH, generator=generator)
    got = Distiller(config, model).teacher_clean(noisy, sigma, batch)
    positive, negative, with_pose = direct_flows(dit, guider, batch, noisy, torch.tensor([sigma * 1000]))
    expected = flow_to_clean(noisy, negative + scale * (positive - negative), sigma)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got - flow_to_clean(noisy, with_pose + scale * (positive - with_pose), sigma)).abs().max() > 1e-3


def test_dropped_pose_trains_the_negative_pass_and_keeps_the_guider_in_the_graph():
    """with_pose False gives the flow of pose_features None (the state cfg's negative pass asks for), and the
    guider still receives (zero) gradients, so FSDP reduces the same tensors on every process."""
    dit, guider = tiny_networks()
    model = PoseDiT(dit, guider, torch.float32)
    batch = clip_batch(seed=3)
    noisy, timestep = batch.latents + 1, torch.tensor([500.0])
    with torch.no_grad():
        y = batch.y + guider.reference_condition(batch.reference_pose)
        expected = predict_flow(dit, noisy, timestep, FlowConditions(batch.context, batch.clip_feature, y, None))
        torch.testing.assert_close(model(noisy, timestep, batch, None, with_pose=False), expected, rtol=0, atol=0)
        assert (model(noisy, timestep, batch, None) - expected).abs().max() > 1e-3
    guider.requires_grad_(True)
    torch.manual_seed(0)
    flow = FlowConfig()
    flow_matching_loss(model, batch.latents, batch, None, TrainingSchedule.from_config(flow), flow, with_pose=False).backward()
    pose_net = list(guider.dwpose_embedding.parameters())
    assert all(p.grad is not None and not p.grad.any() for p in pose_net)
    assert any(p.grad is not None and p.grad.any() for p in guider.randomref_embedding_pose.parameters())


def test_teacher_defaults_are_unianimates_sampling():
    """UniAnimate-DiT's examples/unianimate_wan/inference_unianimate_wan_480p.py: 50 steps, cfg 1.5, and
    diffsynth/pipelines/wan_video.py's default sigma_shift 5.0."""
    sampler = SamplerConfig()
    assert (sampler.num_steps, sampler.cfg_scale, sampler.shift) == (50, 1.5, 5.0)
    assert DistillConfig().teacher_cfg_scale == 1.5
