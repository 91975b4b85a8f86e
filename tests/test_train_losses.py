"""Training losses and their parts against independent expectations, on CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from iasa.attention.config import SparseAttentionConfig
from iasa.pose.synthetic_speaker import synthetic_speaker
from iasa.train.adapters import adapter_parameters, copy_adapter, set_trainable, use_adapter
from iasa.train.cache import CacheError, ClipOrder, read_clip, stack_clips
from iasa.train.config import ConditionDropoutConfig, FlowConfig, RegionLossConfig
from iasa.train.distill import dmd_loss
from iasa.train.finetune import drop_conditions, flow_matching_loss
from iasa.train.flow_matching import TrainingSchedule, add_noise, flow_target, flow_to_clean
from iasa.train.model import PoseDiT, load_training_components
from iasa.train.region_loss import RegionLoss, decoded_frame_indices, region_masks
from iasa.train.tasks import main
from iasa.video.assembly import load_wan_components
from iasa.video.config import VideoModelConfig
from iasa.video.lora import inject_lora

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = VideoModelConfig(model_size="tiny", model_dir=None, unianimate_checkpoint=None, dtype="float32", device="cpu")


def test_noising_and_clean_prediction_round_trip() -> None:
    clean, noise = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 3, 4, 4)
    sigma = 0.3
    noisy = add_noise(clean, noise, sigma)
    assert torch.allclose(flow_to_clean(noisy, flow_target(clean, noise), sigma), clean, atol=1e-6)


def test_training_schedule_is_wans_shifted_schedule() -> None:
    schedule = TrainingSchedule.from_config(FlowConfig(shift=5.0, num_train_timesteps=1000))
    uniform = torch.linspace(1, 0, 1001)[:-1]
    assert torch.allclose(schedule.sigmas, 5 * uniform / (1 + 4 * uniform), atol=1e-6)
    assert torch.allclose(schedule.timesteps, 1000 * schedule.sigmas)
    # diffsynth's weights: a bell over the timestep peaked at t = 500, zero at its lowest point, mean 1.
    assert abs(schedule.timesteps[schedule.weights.argmax()].item() - 500) < 2
    assert schedule.weights.min() == 0 and schedule.weights.mean().item() == pytest.approx(1.0, rel=1e-4)


def test_condition_dropout_rates_and_targets() -> None:
    """The pose is dropped by leaving the pose features out (with_pose False), as cfg's negative pass does: the
    pose images, the reference pose and y's reference-pose input stay; the image drop zeroes CLIP and y."""
    window = _fake_batch()
    torch.manual_seed(0)
    config = ConditionDropoutConfig(pose=0.05, image=0.10)
    pose_dropped = image_dropped = 0
    trials = 4000
    for _ in range(trials):
        dropped, with_pose = drop_conditions(window, config)
        pose_dropped += int(not with_pose)
        image_dropped += int(not dropped.y.any())
        assert torch.equal(dropped.pose_video, window.pose_video) and torch.equal(dropped.reference_pose, window.reference_pose)
        assert (not dropped.y.any()) == (not dropped.clip_feature.any())
        assert torch.equal(dropped.latents, window.latents) and torch.equal(dropped.context, window.context)
    assert abs(pose_dropped / trials - 0.05) < 0.015 and abs(image_dropped / trials - 0.10) < 0.02


def _fake_batch():
    from iasa.train.cache import ClipBatch

    return ClipBatch(
        name="fake", latents=torch.randn(1, 16, 3, 4, 4), context=torch.randn(1, 16, 32), negative_context=torch.randn(1, 16, 32),
        clip_feature=torch.randn(1, 257, 1280), y=torch.randn(1, 20, 3, 4, 4), pose_video=torch.rand(1, 3, 9, 32, 32) + 0.1,
        reference_pose=torch.rand(1, 3, 32, 32) + 0.1,
    )  # fmt: skip


def test_dmd_loss_gradient_is_the_normalised_score_difference() -> None:
    sample = torch.randn(1, 16, 3, 4, 4, requires_grad=True)
    real, fake = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 3, 4, 4)
    dmd_loss(sample, real, fake).backward()
    normaliser = (sample.detach() - real).abs().mean()
    expected = (fake - real) / normaliser / sample.numel()
    assert torch.allclose(sample.grad, expected, atol=1e-7)


def test_region_masks_partition_the_frame_with_priority() -> None:
    keypoints = synthetic_speaker(num_frames=5, image_size=(96, 96), seed=1)
    regions = ["face", "hands", "arms", "torso", "background"]
    masks = region_masks(keypoints, regions, (96, 96), SparseAttentionConfig())
    assert masks.shape == (5, 5, 96, 96)
    assert torch.equal(masks.sum(dim=1), torch.ones(5, 96, 96)), "every pixel in exactly one region"
    assert (masks[:, :4].sum(dim=(0, 2, 3)) > 0).all(), "each drawn region is somewhere in the clip"
    # Priority: the face wins over the torso (listed first) where both are drawn; reversing the order flips it.
    flipped = region_masks(keypoints, ["torso", "face", "background"], (96, 96), SparseAttentionConfig())
    assert (flipped[:, 1].sum() <= masks[:, 0].sum()) and flipped[:, 0].sum() >= masks[:, 3].sum()


def test_region_pixel_term_matches_a_brute_force_sum() -> None:
    torch.manual_seed(0)
    frames, height, width = 2, 8, 8
    x, x_hat = torch.rand(frames, 3, height, width) * 2 - 1, torch.rand(frames, 3, height, width) * 2 - 1
    labels = torch.randint(0, 3, (frames, height, width))
    masks = torch.stack([(labels == r).float() for r in range(3)], dim=1)
    weights = {"face": 2.0, "hands": 0.5, "background": 0.1}
    loss = RegionLoss(RegionLossConfig(region_weights=weights, pixel_weight=1.0))(x, x_hat, masks)
    expected = 0.0
    for region, weight in enumerate(weights.values()):
        errors = [float((x[f, :, i, j] - x_hat[f, :, i, j]).abs().mean()) for f in range(frames) for i in range(height)
                  for j in range(width) if labels[f, i, j] == region]  # fmt: skip
        expected += weight * sum(errors) / len(errors)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_perceptual_terms_need_their_model_files() -> None:
    with pytest.raises(FileNotFoundError, match="lpips_path"):
        RegionLoss(RegionLossConfig(lpips_weight=1.0, lpips_path="/nowhere/lpips.pt"))
    with pytest.raises(FileNotFoundError, match="face_id_path"):
        RegionLoss(RegionLossConfig(face_id_weight=1.0))


def test_lpips_term_compares_each_region_masked(tmp_path: Path) -> None:
    class MeanAbsolute(torch.nn.Module):  # stands in for an exported LPIPS network
        def forward(self, image0: torch.Tensor, image1: torch.Tensor) -> torch.Tensor:
            return (image0 - image1).abs().mean(dim=(1, 2, 3))

    path = tmp_path / "lpips.pt"
    torch.jit.save(torch.jit.script(MeanAbsolute()), str(path))
    weights = {"face": 3.0, "background": 0.5}
    loss = RegionLoss(RegionLossConfig(region_weights=weights, pixel_weight=0.0, lpips_weight=2.0, lpips_path=str(path)))
    x, x_hat = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    x_hat[:, :, :4] = 1.0  # top half differs
    masks = torch.zeros(2, 2, 8, 8)
    masks[:, 0, :2] = 1  # face: the top quarter
    masks[:, 1] = 1 - masks[:, 0]
    # Per region: mean over the whole image of |m x - m x_hat| = differing masked pixels / all pixels.
    expected = 2.0 * (3.0 * (16 / 64) + 0.5 * (16 / 64))
    assert loss(x, x_hat, masks).item() == pytest.approx(expected, rel=1e-6)


def test_face_identity_term_uses_the_face_box(tmp_path: Path) -> None:
    class MeanColour(torch.nn.Module):
        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return crops.mean(dim=(2, 3)) + 2.0

    path = tmp_path / "face.pt"
    torch.jit.save(torch.jit.script(MeanColour()), str(path))
    loss = RegionLoss(RegionLossConfig(region_weights={"face": 1.0, "background": 0.0}, pixel_weight=0.0, face_id_weight=1.0, face_id_path=str(path)))
    x = torch.zeros(1, 3, 16, 16)
    masks = torch.zeros(1, 2, 16, 16)
    masks[:, 0, 4:8, 4:8] = 1
    masks[:, 1] = 1 - masks[:, 0]
    changed_outside = x.clone()
    changed_outside[..., 10:, 10:] = 1
    assert loss(x, changed_outside, masks).item() == pytest.approx(0.0, abs=1e-6)
    changed_face = x.clone()
    changed_face[:, 0, 4:8, 4:8] = 3
    assert loss(x, changed_face, masks).item() > 0.05


def test_decoded_frame_indices_follow_the_causal_vae() -> None:
    assert decoded_frame_indices(0, 2) == [0, 1, 2, 3, 4]
    assert decoded_frame_indices(3, 2) == [12, 13, 14, 15, 16]


def test_window_order_visits_every_window_once_per_epoch() -> None:
    keys = [f"w{i}" for i in range(7)]
    order = ClipOrder(keys, seed=3)
    assert sorted(order.key(i) for i in range(7)) == keys
    assert sorted(order.key(i) for i in range(7, 14)) == keys
    ranks = [ClipOrder(keys, seed=3, rank=r, world_size=2) for r in range(2)]
    first_epoch = [rank.key(i) for rank in ranks for i in range(3)]
    assert len(set(first_epoch)) == 6, "processes read disjoint windows"


def test_adapters_share_one_base_and_switch() -> None:
    torch.manual_seed(0)
    dit = load_wan_components(TINY, parts=("dit",)).dit
    for name in ("teacher", "generator"):
        inject_lora(dit, 4, 4, adapter_name=name)
    with torch.no_grad():
        for parameter in adapter_parameters(dit, "teacher").values():
            parameter.normal_()
    layer = dit.blocks[0].self_attn.q
    x = torch.randn(3, layer.in_features)
    use_adapter(dit, None)
    base = layer(x)
    use_adapter(dit, "generator")
    assert torch.allclose(layer(x), base), "a fresh adapter (B = 0) leaves the layer unchanged"
    use_adapter(dit, "teacher")
    teacher = layer(x)
    assert not torch.allclose(teacher, base)
    copy_adapter(dit, "teacher", "generator")
    use_adapter(dit, "generator")
    assert torch.allclose(layer(x), teacher)
    # Switching keeps the trainable set chosen with set_trainable.
    trainable = list(adapter_parameters(dit, "generator").values())
    set_trainable([dit], trainable)
    use_adapter(dit, "teacher")
    assert {id(p) for p in dit.parameters() if p.requires_grad} == {id(p) for p in trainable}


def test_flow_matching_loss_falls_on_a_fixed_batch(make_dataset, tiny_overrides, tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "dataset", clips=1)
    main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, tmp_path / "cache")])
    torch.manual_seed(0)
    components = load_training_components(TINY, ("dit", "pose_guider"))
    model = PoseDiT(components.dit, components.pose_guider, components.dtype)
    inject_lora(model.dit, 8, 8)
    use_adapter(model.dit, "default")
    trained = list(adapter_parameters(model.dit, "default").values()) + list(model.pose_guider.parameters())
    set_trainable([model.dit, model.pose_guider], trained)
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    batch = read_clip(tmp_path / "cache", "clip0_w000")
    schedule = TrainingSchedule.from_config(FlowConfig())
    flow = FlowConfig(min_timestep_fraction=0.5, max_timestep_fraction=0.5)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same noise and timestep every step: only the weights change
        loss = flow_matching_loss(model, batch.latents, batch, batch.layouts["both"], schedule, flow)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_stacked_clips_each_get_their_own_noise_level_pose_drop_and_weight(make_dataset, tiny_overrides, tmp_path: Path) -> None:
    """The pretrain task's clips_per_step: the loss of two stacked clips is the mean of each clip's flow MSE
    times its noise level's weight, each clip predicted alone (dense) at the level and noise drawn for it, the
    second without pose features."""
    dataset = make_dataset(tmp_path / "dataset", clips=2)
    main(["--config", "config/data_process.yaml", *tiny_overrides(dataset, tmp_path / "cache")])
    components = load_training_components(TINY, ("dit", "pose_guider"))
    model = PoseDiT(components.dit, components.pose_guider, components.dtype)
    clips = [read_clip(tmp_path / "cache", key) for key in ("clip0_w000", "clip1_w000")]
    stacked = stack_clips(clips)
    schedule, flow = TrainingSchedule.from_config(FlowConfig()), FlowConfig()
    with_pose = torch.tensor([True, False])
    torch.manual_seed(3)
    loss = flow_matching_loss(model, stacked.latents, stacked, None, schedule, flow, with_pose)

    torch.manual_seed(3)
    indices = torch.randint(0, len(schedule.sigmas), (2,))
    noise = torch.randn_like(stacked.latents)
    expected = []
    for index, clip in enumerate(clips):
        sigma = schedule.sigmas[indices[index]].item()
        noisy = (1 - sigma) * clip.latents + sigma * noise[index : index + 1]
        timestep = schedule.timesteps[indices[index] : indices[index] + 1]
        prediction = model(noisy, timestep, clip, None, with_pose=bool(with_pose[index]))
        target = noise[index : index + 1] - clip.latents
        expected.append(((prediction - target) ** 2).mean() * schedule.weights[indices[index]])
    assert indices[0] != indices[1]
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)


def test_clips_of_different_shapes_are_not_stacked() -> None:
    small, large = _fake_batch(), _fake_batch()
    large = dataclasses.replace(large, latents=torch.zeros(1, 16, 5, 4, 4))
    with pytest.raises(CacheError, match="one shape"):
        stack_clips([small, large])
