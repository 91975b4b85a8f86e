"""One flow prediction of the pose-conditioned Wan2.1-I2V DiT: what the sampler and every training loss run.

diffsynth's `WanModel.forward` is broken in 2.1.12 and its `model_fn_wan_video` has no input for UniAnimate's
pose features, so `predict_flow` runs the DiT's own submodules in Wan's order, adding the pose guider's
features to the patch embeddings (UniAnimate's `add_condition`). Its result depends on its arguments only:
the clip's sparse layout and the kernel travel to every block's self-attention as `SelfAttentionArgs`
(iasa.video.attention_patch), built here once per forward.

Sequence parallelism (`parallel`, a torchrun group of N processes): every process runs the whole forward on
its contiguous shard of the (f h w) tokens (iasa.parallel.shard_tokens; the timestep, text and CLIP
embeddings are every process's), the shards travel in SelfAttentionArgs to the self-attention's Ulysses
all-to-alls, and the head's per-token output is gathered, so every process returns the whole flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffsynth.core.gradient import gradient_checkpoint_forward
from diffsynth.models.wan_video_dit import WanModel, sinusoidal_embedding_1d
from einops import rearrange

from iasa.attention.layout import SparseLayout
from iasa.parallel.process_group import ParallelGroup
from iasa.parallel.ulysses import SequenceShards, check_head_split, gather_tokens, shard_tokens
from iasa.video.attention_patch import SelfAttentionArgs, is_patched


@dataclass(frozen=True, eq=False)
class FlowConditions:
    """What the DiT is conditioned on besides the noisy latents, for a batch of clips (or windows).

    context (b, L, text_dim) umt5 embeddings of the prompt (or of the negative prompt); clip_feature (b, 257,
    1280) CLIP tokens of the reference image; y (b, 20, T, h, w) I2V condition with the reference-pose embedding
    already added; pose_features (b, dim, T, h/2, w/2) from the pose guider, or None.
    """

    context: torch.Tensor
    clip_feature: torch.Tensor
    y: torch.Tensor
    pose_features: torch.Tensor | None


def rope_frequencies(dit: WanModel, frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """3D RoPE of a (frames, height, width) token grid in (f h w) order: (f*h*w, 1, head_dim / 2) complex."""
    f_freqs, h_freqs, w_freqs = dit.freqs
    return torch.cat(
        [
            f_freqs[:frames].view(frames, 1, 1, -1).expand(frames, height, width, -1),
            h_freqs[:height].view(1, height, 1, -1).expand(frames, height, width, -1),
            w_freqs[:width].view(1, 1, width, -1).expand(frames, height, width, -1),
        ],
        dim=-1,
    ).reshape(frames * height * width, 1, -1).to(device)


def predict_flow(
    dit: WanModel,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    conditions: FlowConditions,
    layout: SparseLayout | None = None,
    backend: str = "reference",
    use_gradient_checkpointing: bool = False,
    use_gradient_checkpointing_offload: bool = False,
    parallel: ParallelGroup | None = None,
) -> torch.Tensor:
    """Flow (noise - x0) for noisy latents (b, 16, T, h, w) at timestep (b,) in [0, 1000]: (b, 16, T, h, w).

    layout: the sparse layout of the clip's (T, h/2, w/2) token grid, None = dense attention; backend: the
    sparse kernel; parallel: the processes that share the forward by sequence parallelism (None or a group of
    one: this process alone). The DiT's self-attention must be patched (attention_patch.patch_self_attention).
    """
    if not is_patched(dit):
        raise RuntimeError("the DiT's self-attention is not patched: call patch_self_attention(dit) first")
    t = dit.time_embedding(sinusoidal_embedding_1d(dit.freq_dim, timestep).to(latents.dtype))
    t_mod = rearrange(dit.time_projection(t), "b (six d) -> b six d", six=6)
    context = torch.cat([dit.img_emb(conditions.clip_feature), dit.text_embedding(conditions.context)], dim=1)
    x = dit.patch_embedding(torch.cat([latents, conditions.y], dim=1))
    frames, height, width = x.shape[2:]
    if conditions.pose_features is not None:
        x = x + conditions.pose_features.to(x.dtype)
    x = rearrange(x, "b c f h w -> b (f h w) c").contiguous()
    freqs = rope_frequencies(dit, frames, height, width, x.device)
    shards = None
    if parallel is not None and parallel.world_size > 1:
        check_head_split(dit.blocks[0].self_attn.num_heads, parallel.world_size)
        shards = SequenceShards(x.shape[1], parallel)
        x, freqs = shard_tokens(x, shards), shard_tokens(freqs, shards, dim=0)
    attention = SelfAttentionArgs.for_forward(freqs, layout, backend, shards)
    for block in dit.blocks:
        # diffsynth's DiTBlock.forward(x, context, t_mod, freqs) hands its fourth argument to self_attn alone,
        # which after patching is RoutedSelfAttention: it takes this forward's SelfAttentionArgs there. Each
        # block is called whole (FSDP all-gathers a block in its forward pre-hook), and a checkpointed block is
        # re-run in backward with these same arguments. A per-layer key/value cache (streaming) would be
        # handed to block i as dataclasses.replace(attention, <cache field>=caches[i]).
        x = gradient_checkpoint_forward(
            block, use_gradient_checkpointing, use_gradient_checkpointing_offload, x, context, t_mod, attention
        )
    x = dit.head(x, t)
    if shards is not None:  # (b, S/N, patch * 16) -> (b, S, patch * 16): the narrowest tensor of the forward
        x = gather_tokens(x, shards)
    return dit.unpatchify(x, (frames, height, width))
