"""The routed self-attention: dense equals diffsynth's, an all-allowing sparse layout equals dense, a
restrictive layout applies exactly the IASA rule, and it all survives peft LoRA and checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
from diffsynth.pipelines.wan_video import model_fn_wan_video

from iasa.attention.layout import SparseLayout
from iasa.video.attention_patch import RoutedAttention, SelfAttentionArgs, patch_self_attention
from iasa.video.config import ARCHITECTURES, CLIP_FEATURE_DIM, CLIP_TOKENS, CONDITION_CHANNELS
from iasa.video.denoiser import FlowConditions, predict_flow, rope_frequencies
from iasa.video.lora import inject_lora

TINY = ARCHITECTURES["tiny"]
FRAMES, HEIGHT, WIDTH = 3, 8, 12  # latent grid -> 3 x 4 x 6 = 72 tokens


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "latents": randn(1, 16, FRAMES, HEIGHT, WIDTH),
        "timestep": torch.tensor([700.0]),
        "context": randn(1, TINY.text_length, TINY.text_dim),
        "clip_feature": randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM),
        "y": randn(1, CONDITION_CHANNELS, FRAMES, HEIGHT, WIDTH),
    }


def flow(dit, pose_features=None, layout=None, **kwargs) -> torch.Tensor:
    x = inputs()
    conditions = FlowConditions(x["context"], x["clip_feature"], x["y"], pose_features)
    return predict_flow(dit, x["latents"], x["timestep"], conditions, layout, "reference", **kwargs)


def layout(frame_selection: torch.Tensor, regions: torch.Tensor) -> SparseLayout:
    return SparseLayout(frame_selection=frame_selection, token_regions=regions, grid_size=(HEIGHT // 2, WIDTH // 2))


def test_patched_dense_forward_equals_diffsynth_model_fn(tiny_dit):
    dit = tiny_dit()
    with torch.no_grad():
        expected = model_fn_wan_video(dit=dit, **inputs())
        patch_self_attention(dit)
        assert all(isinstance(block.self_attn.attn, RoutedAttention) for block in dit.blocks)
        assert not any(isinstance(block.cross_attn.attn, RoutedAttention) for block in dit.blocks)
        torch.testing.assert_close(flow(dit), expected, rtol=1e-5, atol=1e-5)


def test_unpatched_dit_is_refused(tiny_dit):
    with pytest.raises(RuntimeError, match="patch_self_attention"):
        flow(tiny_dit())


def test_pose_features_are_added_to_patch_embeddings(tiny_dit):
    dit = tiny_dit()
    patch_self_attention(dit)
    features = torch.randn(1, TINY.dim, FRAMES, HEIGHT // 2, WIDTH // 2)
    with torch.no_grad():
        shifted = copy.deepcopy(dit)
        # Folding constant features into the patch-embedding bias is the same as adding them: check with
        # features constant over tokens.
        constant = features[:, :, :1, :1, :1].expand_as(features)
        shifted.patch_embedding.bias += constant[0, :, 0, 0, 0]
        torch.testing.assert_close(flow(dit, pose_features=constant), flow(shifted), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(flow(dit, pose_features=features), flow(dit))


def test_all_allowing_sparse_layout_equals_dense(tiny_dit):
    dit = tiny_dit()
    patch_self_attention(dit)
    tokens = (HEIGHT // 2) * (WIDTH // 2)
    everything = layout(torch.ones(FRAMES, FRAMES, dtype=torch.bool), torch.ones(FRAMES, tokens, dtype=torch.long))
    with torch.no_grad():
        torch.testing.assert_close(flow(dit, layout=everything), flow(dit), rtol=1e-5, atol=1e-5)


def test_restrictive_layout_applies_the_iasa_rule(tiny_dit, brute_force_allowed, brute_force_attention):
    heads, head_dim = TINY.num_heads, TINY.dim // TINY.num_heads
    tokens = (HEIGHT // 2) * (WIDTH // 2)
    generator = torch.Generator().manual_seed(3)
    selection = torch.eye(FRAMES, dtype=torch.bool)
    selection[2, 0] = selection[1, 0] = True
    regions = torch.randint(0, 3, (FRAMES, tokens), generator=generator)
    attention = RoutedAttention(heads)
    q, k, v = (torch.randn(1, FRAMES * tokens, heads * head_dim, generator=generator) for _ in range(3))
    freqs = rope_frequencies(tiny_dit(), FRAMES, HEIGHT // 2, WIDTH // 2, torch.device("cpu"))
    sparse = SelfAttentionArgs.for_forward(freqs, layout(selection, regions), "reference")
    split = lambda t: t.view(1, -1, heads, head_dim).transpose(1, 2)  # noqa: E731
    allowed = brute_force_allowed(selection, regions)
    expected = brute_force_attention(split(q), split(k), split(v), allowed).float().transpose(1, 2).reshape(1, -1, heads * head_dim)
    torch.testing.assert_close(attention(q, k, v, sparse), expected, rtol=1e-5, atol=1e-5)
    dense = SelfAttentionArgs.for_forward(freqs, None, "reference")
    assert not torch.allclose(attention(q, k, v, dense), expected, atol=1e-3)


def test_layout_of_the_wrong_size_is_an_error(tiny_dit):
    dit = tiny_dit()
    patch_self_attention(dit)
    with pytest.raises(ValueError, match="tokens"):
        flow(dit, layout=layout(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 24, dtype=torch.long)))


@pytest.mark.parametrize("attention", ["dense", "iasa"])
def test_lora_and_gradient_checkpointing_keep_the_patch(attention, tiny_dit):
    dit = tiny_dit()
    patch_self_attention(dit)
    dit = inject_lora(dit, rank=2, alpha=2)
    assert all(isinstance(block.self_attn.attn, RoutedAttention) for block in dit.blocks)
    for name, parameter in dit.named_parameters():
        parameter.requires_grad_("lora_" in name)
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    tokens = (HEIGHT // 2) * (WIDTH // 2)
    selection = torch.eye(FRAMES, dtype=torch.bool) | torch.ones(FRAMES, FRAMES, dtype=torch.bool).tril()
    regions = (torch.arange(FRAMES * tokens).view(FRAMES, tokens) % 3)
    sparse = layout(selection, regions) if attention == "iasa" else None
    dit.train()
    gradients = []
    for checkpointing in (False, True):
        dit.zero_grad()
        flow(dit, layout=sparse, use_gradient_checkpointing=checkpointing).square().mean().backward()
        gradients.append({n: p.grad.clone() for n, p in dit.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for n, g in gradients[0].items() if "self_attn" in n and "lora_A" in n)


def test_checkpointed_backward_recomputes_the_forward_it_differentiates(tiny_dit):
    """Two forwards with different layouts, then both backwards: each recomputation uses its own forward's
    arguments (nothing is read back from the modules), so the gradients equal those of separate runs."""
    dit = inject_lora(tiny_dit(), rank=2, alpha=2)
    patch_self_attention(dit)
    for name, parameter in dit.named_parameters():
        parameter.requires_grad_("lora_" in name)
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    tokens = (HEIGHT // 2) * (WIDTH // 2)
    causal = layout(torch.ones(FRAMES, FRAMES, dtype=torch.bool).tril(), torch.arange(FRAMES * tokens).view(FRAMES, tokens) % 3)

    def gradients(*layouts) -> dict[str, torch.Tensor]:
        dit.zero_grad()
        losses = [flow(dit, layout=chosen, use_gradient_checkpointing=True).square().mean() for chosen in layouts]
        sum(losses).backward()
        return {n: p.grad.clone() for n, p in dit.named_parameters() if p.requires_grad}

    separate = [gradients(causal), gradients(None)]
    together = gradients(causal, None)
    for name in together:
        torch.testing.assert_close(together[name], separate[0][name] + separate[1][name], rtol=1e-4, atol=1e-6)
