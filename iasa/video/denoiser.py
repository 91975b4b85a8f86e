"""One flow prediction of the pose-conditioned Wan2.1-I2V DiT: what the sampler and every training loss run.

diffsynth's `WanModel.forward` is broken in 2.1.12 and its `model_fn_wan_video` has no input for UniAnimate's
pose features, so `predict_flow` runs the DiT's own submodules in Wan's order, adding the pose guider's
features to the patch embeddings (UniAnimate's `add_condition`). Its result depends on its arguments only:
the clip's sparse layout and the kernel travel to every block's self-attention as `SelfAttentionArgs`
(iasa.video.attention_patch), built here once per forward.

`predict_flow_streamed` is the same forward on one chunk of latent frames of a stream (iasa.video.streaming):
the stream's preallocated key/value cache goes in as an argument (iasa.video.stream_cache), every layer reads
the cached keys of earlier frames from it and writes the chunk's own into it, in place. It runs its blocks
through the same compiled block function as a full clip when asked (`compiled`).

Sequence parallelism (`parallel`, a torchrun group of N processes): every process runs the whole forward on
its contiguous shard of the (f h w) tokens (iasa.parallel.shard_tokens; the timestep, text and CLIP
embeddings are every process's), the shards travel in SelfAttentionArgs to the self-attention's Ulysses
all-to-alls, and the head's per-token output is gathered, so every process returns the whole flow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffsynth.core.gradient import gradient_checkpoint_forward
from diffsynth.models.wan_video_dit import WanModel, sinusoidal_embedding_1d
from einops import rearrange

from iasa.attention.chunk_layout import ChunkLayout
from iasa.attention.dispatch import prepare_sparse_attention
from iasa.attention.layout import SparseLayout
from iasa.parallel.process_group import ParallelGroup
from iasa.parallel.ulysses import SequenceShards, check_head_split, gather_tokens, shard_tokens
from iasa.video.attention_patch import SelfAttentionArgs, StreamedKeys, is_patched
from iasa.video.compiled_blocks import compiled_block, register_layout, run_block


@dataclass(frozen=True, eq=False)
class FlowConditions:
    """What the DiT is conditioned on besides the noisy latents, for a batch of clips (or windows).

    context (b, L, text_dim) umt5 embeddings of the prompt (or of the negative prompt); clip_feature (b, 257,
    1280) CLIP tokens of the reference image ((b, 0, 1280), unread, for a DiT without image input); y (b, 20,
    T, h, w) I2V condition with the reference-pose embedding already added; pose_features (b, dim, T, h/2, w/2) from the pose guider, or None.
    """

    context: torch.Tensor
    clip_feature: torch.Tensor
    y: torch.Tensor
    pose_features: torch.Tensor | None

    def unconditional(self, negative_context: torch.Tensor) -> "FlowConditions":
        """The negative pass of classifier-free guidance, as UniAnimate-DiT's pipelines run it (its
        diffsynth/pipelines/wan_video.py calls model_fn_wan_video for noise_pred_nega without add_condition):
        the negative prompt's context and no pose features, while y (with the reference-pose embedding) and the
        CLIP tokens stay. One scale thus guides prompt and pose together."""
        return replace(self, context=negative_context, pose_features=None)


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


@dataclass(frozen=True, eq=False)
class RopeTables:
    """The DiT's 3D RoPE as float32 tables on one device, per axis (frame, row, column): cos and sin (positions,
    axis_dim / 2) each. A streamed chunk gathers its tokens' angles from them there, every chunk, instead of
    gathering complex128 on the CPU and copying that over."""

    cos: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    sin: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @classmethod
    def of(cls, dit: WanModel, device: torch.device) -> "RopeTables":
        # diffsynth's freqs are unit complex numbers exp(i * angle) in complex128: real = cos, imag = sin.
        tables = [torch.view_as_real(axis).float().to(device) for axis in dit.freqs]
        return cls(tuple(t[..., 0] for t in tables), tuple(t[..., 1] for t in tables))

    def at(
        self, frame_positions: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (s, 1, head_dim / 2) float32 of listed tokens, (s,) temporal position, row and column each:
        the entries rope_frequencies gives the same (frame, row, column)."""
        device = self.cos[0].device
        index = [part.to(device, non_blocking=True) for part in (frame_positions, rows, columns)]
        return tuple(
            torch.cat([axis[i] for axis, i in zip(tables, index)], dim=-1)[:, None] for tables in (self.cos, self.sin)
        )


def embed_tokens(
    dit: WanModel, latents: torch.Tensor, timestep: torch.Tensor, conditions: FlowConditions
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """The DiT's inputs to its blocks: tokens (b, f*h*w, dim) in (f h w) order, time embedding t (b, dim), its
    modulation t_mod (b, 6, dim), the cross-attention context and the (f, h, w) token grid."""
    t = dit.time_embedding(sinusoidal_embedding_1d(dit.freq_dim, timestep).to(latents.dtype))
    t_mod = rearrange(dit.time_projection(t), "b (six d) -> b six d", six=6)
    context = dit.text_embedding(conditions.context)
    if dit.has_image_input:  # the first 257 context tokens are CLIP's, which the image cross-attention reads
        context = torch.cat([dit.img_emb(conditions.clip_feature), context], dim=1)
    x = dit.patch_embedding(torch.cat([latents, conditions.y], dim=1))
    grid = tuple(x.shape[2:])
    if conditions.pose_features is not None:
        x = x + conditions.pose_features.to(x.dtype)
    x = rearrange(x, "b c f h w -> b (f h w) c").contiguous()
    return x, t, t_mod, context, grid


def predict_flow(
    dit: WanModel,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    conditions: FlowConditions,
    layout: SparseLayout | None = None,
    backend: str = "reference",
    use_gradient_checkpointing: bool = False,
    use_gradient_checkpointing_offload: bool = False,
    compiled: bool = False,
    parallel: ParallelGroup | None = None,
) -> torch.Tensor:
    """Flow (noise - x0) for noisy latents (b, 16, T, h, w) at timestep (b,) in [0, 1000]: (b, 16, T, h, w).

    layout: the sparse layout of the clip's (T, h/2, w/2) token grid, None = dense attention; backend: the
    sparse kernel; parallel: the processes that share the forward by sequence parallelism (None or a group of
    one: this process alone); compiled: run the blocks through the one compiled block function
    (iasa.video.compiled_blocks; inference on one process). The DiT's self-attention must be patched
    (attention_patch.patch_self_attention).
    """
    if not is_patched(dit):
        raise RuntimeError("the DiT's self-attention is not patched: call patch_self_attention(dit) first")
    x, t, t_mod, context, (frames, height, width) = embed_tokens(dit, latents, timestep, conditions)
    freqs = rope_frequencies(dit, frames, height, width, x.device)
    shards = None
    if parallel is not None and parallel.world_size > 1:
        if compiled:
            raise ValueError("compiled DiT blocks run on one process: set speed.compile_dit=false under torchrun")
        check_head_split(dit.blocks[0].self_attn.num_heads, parallel.world_size)
        shards = SequenceShards(x.shape[1], parallel)
        x, freqs = shard_tokens(x, shards), shard_tokens(freqs, shards, dim=0)
    attention = SelfAttentionArgs.for_forward(freqs, layout, backend, shards)
    if compiled:
        if torch.is_grad_enabled():
            raise RuntimeError("compiled DiT blocks are for inference: call predict_flow under torch.no_grad()")
        if layout is not None:
            prepare_sparse_attention(layout, backend, x.device)
        run = compiled_block()
        for block in dit.blocks:
            x = run(block, x, context, t_mod, attention)
        return dit.unpatchify(dit.head(x, t), (frames, height, width))
    for block in dit.blocks:
        # diffsynth's DiTBlock.forward(x, context, t_mod, freqs) hands its fourth argument to self_attn alone,
        # which after patching is RoutedSelfAttention: it takes this forward's SelfAttentionArgs there. Each
        # block is called whole (FSDP all-gathers a block in its forward pre-hook), and a checkpointed block is
        # re-run in backward with these same arguments. (predict_flow_streamed hands each block its own cache.)
        x = gradient_checkpoint_forward(
            block, use_gradient_checkpointing, use_gradient_checkpointing_offload, x, context, t_mod, attention
        )
    x = dit.head(x, t)
    if shards is not None:  # (b, S/N, patch * 16) -> (b, S, patch * 16): the narrowest tensor of the forward
        x = gather_tokens(x, shards)
    return dit.unpatchify(x, (frames, height, width))


@torch.no_grad()
def predict_flow_streamed(
    dit: WanModel,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    conditions: FlowConditions,
    frame_positions: torch.Tensor,
    rope: RopeTables,
    streamed: StreamedKeys,
    layout: ChunkLayout | None = None,
    backend: str = "reference",
    compiled: bool = False,
) -> torch.Tensor:
    """Flow of one chunk of a stream, noisy latents (b, 16, C, h, w) -> (b, 16, C, h, w); every layer writes its
    keys and values of the chunk's C*h/2*w/2 tokens into the stream cache's chunk area (streamed.cache) for the
    caller to cache.

    frame_positions (C,): the chunk's temporal RoPE positions; rope: the DiT's tables on the latents' device;
    streamed: the cache and where this chunk reads and writes it (its layer's buffers are set here, block by
    block); layout: the chunk's keys per query (None = dense: every key the window holds). conditions hold the
    chunk's frames of y and pose features. compiled: run the blocks through the one compiled block function
    (iasa.video.compiled_blocks), the cache still written in place; every new shape of chunk is one more
    compilation (iasa.video.streaming.generate_chunk asks for the stream's fixed shape only).
    """
    if not is_patched(dit):
        raise RuntimeError("the DiT's self-attention is not patched: call patch_self_attention(dit) first")
    x, t, t_mod, context, (frames, height, width) = embed_tokens(dit, latents, timestep, conditions)
    positions = torch.as_tensor(frame_positions)
    rows = torch.arange(height).view(1, height, 1).expand(frames, height, width).reshape(-1)
    columns = torch.arange(width).view(1, 1, width).expand(frames, height, width).reshape(-1)
    chunk_positions = positions.view(frames, 1, 1).expand(frames, height, width).reshape(-1)
    attention = SelfAttentionArgs(layout, backend, *rope.at(chunk_positions, rows, columns))
    run = run_block
    if compiled:
        run = compiled_block()
        if layout is not None:  # found by its tensors inside the compiled block, its kernel's plan built
            register_layout(layout)
            prepare_sparse_attention(layout, backend, x.device)
    for index, block in enumerate(dit.blocks):
        x = run(block, x, context, t_mod, replace(attention, streamed=streamed.at_layer(index)))
    x = dit.head(x, t)
    return dit.unpatchify(x, (frames, height, width))
