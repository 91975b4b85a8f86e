"""Every DiT block's self-attention as the project's: dense SDPA or IASA sparse, chosen per forward by its arguments.

`patch_self_attention(dit)` swaps the class of each `block.self_attn` for `RoutedSelfAttention` (another forward,
no new parameters) and its attention op `block.self_attn.attn` for `RoutedAttention` (no parameters). The block
loop (iasa.video.denoiser) then hands every block one `SelfAttentionArgs`: the clip's sparse layout (None =
dense), the sparse kernel and the RoPE cos/sin tables of this forward. Nothing per forward is stored on a module,
so a forward's result depends only on its arguments, and gradient checkpointing, which re-runs a block with
the arguments it was called with, recomputes exactly the forward being differentiated. Under sequence
parallelism (torchrun) the same arguments carry the token shards, and the attention op wraps itself in
Ulysses all-to-alls; the layout and the kernels are the same, each process running them on its heads.

The self-attention forward: the block's own q/k/v/o linears, then RMSNorm + RoPE in one float32 pass
(`norm_rope`, one fused kernel on CUDA for inference), then dense or sparse attention. diffsynth's SelfAttention
does the same math with RoPE in complex128 (a float64 copy of q and k in every layer) and an unfused float32
RMSNorm; results differ by bf16 rounding only. Only self-attention is touched: the cross-attention stays
diffsynth's. State-dict keys, peft LoRA injection (which wraps the q/k/v/o linears, before or after patching),
FSDP2 (which shards and calls whole blocks) and gradient checkpointing all work unchanged. Tokens arrive in
Wan's (f h w) order, the order SparseLayout uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffsynth.models.wan_video_dit import SelfAttention
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from iasa.attention import sparse_attention
from iasa.attention.chunk_layout import ChunkLayout
from iasa.attention.layout import SparseLayout
from iasa.video.compiled_blocks import chunk_self_attention_op, register_layout, self_attention_op
from iasa.parallel.ulysses import SequenceShards, ulysses_attention
from iasa.video.fast_compile import CompiledWithFallback
from iasa.video.stream_cache import StreamCache

# Fastest first on H100/H200 (cuDNN is 1.3-1.4x flash there); SDPA falls through the list when a kernel
# cannot take the inputs (e.g. float32).
CUDA_SDPA_PRIORITY = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
ATTENTION_MODES = ("dense", "iasa")


@dataclass(frozen=True, eq=False)
class SelfAttentionArgs:
    """What every block's self-attention reads in one DiT forward, besides the hidden states.

    layout: the clip's SparseLayout (None = dense attention); backend: the sparse kernel (iasa.attention.BACKENDS);
    rope_cos, rope_sin: (tokens, 1, head_dim / 2) float32 tables of the 3D RoPE angles of the tokens this
    process holds; streamed: a streamed chunk's cache access (StreamedKeys), its layer's buffers set per block by
    the loop (None: a full clip); shards: how the clip's tokens are split over the processes of a sequence-parallel run (iasa.parallel),
    None = this process holds them all.
    """

    layout: SparseLayout | ChunkLayout | None
    backend: str
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor
    streamed: "StreamedKeys | None" = None
    shards: SequenceShards | None = None

    @classmethod
    def for_forward(
        cls,
        freqs: torch.Tensor,
        layout: SparseLayout | ChunkLayout | None,
        backend: str,
        shards: SequenceShards | None = None,
    ) -> "SelfAttentionArgs":
        """From diffsynth's complex RoPE frequencies (tokens, 1, head_dim / 2) of the tokens this process holds."""
        # freqs are unit complex numbers exp(i * angle) in complex128: real = cos, imag = sin.
        table = torch.view_as_real(freqs).float()
        if isinstance(layout, SparseLayout):  # for the compiled blocks' attention op (a chunk's: predict_flow_streamed)
            register_layout(layout)
        return cls(layout, backend, table[..., 0].contiguous(), table[..., 1].contiguous(), shards=shards)


@dataclass(frozen=True, eq=False)
class LayerKeyValues:
    """One layer's keys and values of some tokens: keys (b, s, dim) RMS-normed but not yet rotated (RoPE is
    applied where they are used, at the positions of that chunk), values (b, s, dim)."""

    keys: torch.Tensor
    values: torch.Tensor


@dataclass(frozen=True, eq=False)
class StreamedKeys:
    """What a streamed chunk's self-attention reads and writes besides its own tokens: the stream's
    preallocated cache (iasa.video.stream_cache) and where this chunk's tokens sit in it; `layer`, this block's
    keys and values (b, capacity, dim), views of cache.keys[i] and cache.values[i], is set per block by the loop
    (iasa.video.denoiser.predict_flow_streamed): the block reads the views, not the index, so that every block
    of a compiled stream has inputs of one shape (one graph). Nothing is kept on a module.

    chunk_positions (Sq,) int64 on the cache's device: the buffer position of each of the chunk's tokens ((f h
    w) order), where every layer writes its keys (normed, unrotated) and values; past_start, past_stop: the
    buffer positions of cached frames the chunk rotates, with past_cos, past_sin (past_stop - past_start, 1,
    head_dim / 2) float32, the RoPE tables at this chunk's positions for them; key_start, key_stop: the
    positions the attention reads (the layout's keys)."""

    cache: StreamCache
    chunk_positions: torch.Tensor
    past_start: int
    past_stop: int
    past_cos: torch.Tensor
    past_sin: torch.Tensor
    key_start: int
    key_stop: int
    layer: LayerKeyValues | None = None

    def at_layer(self, index: int) -> "StreamedKeys":
        """These keys with layer `index`'s buffers."""
        return replace(self, layer=LayerKeyValues(self.cache.keys[index], self.cache.values[index]))

    @property
    def has_stream_shape(self) -> bool:
        """The chunk fills the chunk area, rotates every slot and attends to every position of the buffer: its
        shapes are the stream's fixed ones (every whole chunk of a sparse stream; of a dense one, once its slots
        are full)."""
        cache = self.cache
        rotates_every_slot = (self.past_start, self.past_stop) == (cache.slot_start(0), cache.capacity)
        return (
            self.chunk_positions.numel() == cache.chunk_tokens
            and rotates_every_slot
            and (self.key_start, self.key_stop) == (0, cache.capacity)
        )


def dense_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Full attention, (b, heads, tokens, head_dim) in and out, with the fastest SDPA kernel available."""
    if query.is_cuda:
        with sdpa_kernel(CUDA_SDPA_PRIORITY, set_priority=True):
            return F.scaled_dot_product_attention(query, key, value)
    return F.scaled_dot_product_attention(query, key, value)


def norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """RMSNorm over the channels then RoPE per head, in float32, rounded once to x's dtype.

    x (b, s, heads * head_dim); weight (heads * head_dim,); cos, sin (s, 1, head_dim / 2), broadcast over
    heads. Channel pairs (2i, 2i + 1) of each head are the (real, imag) parts rotated by angle i, the pairing
    of diffsynth's view_as_complex. Returns (b, s, heads * head_dim).
    """
    normed = F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps)
    pairs = rearrange(normed, "b s (n d two) -> b s n d two", n=num_heads, two=2)
    real, imag = pairs.unbind(-1)
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rearrange(rotated, "b s n d two -> b s (n d two)").to(x.dtype)


def rms_normed(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """norm_rope's first half: (b, s, dim) -> float32 RMSNorm."""
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps)


def rotate(normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """norm_rope's second half: RoPE of RMS-normed (b, s, dim) in float32, rounded once to dtype."""
    pairs = rearrange(normed.float(), "b s (n d two) -> b s n d two", n=num_heads, two=2)
    real, imag = pairs.unbind(-1)
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rearrange(rotated, "b s n d two -> b s (n d two)").to(dtype)


# One fused kernel on CUDA (read x once, write once) instead of ~10 passes; compiled lazily.
compiled_norm_rope = CompiledWithFallback(norm_rope)


def fused_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """`norm_rope`, compiled into one kernel for CUDA inference; eager under autograd and on the CPU
    (training keeps the plain graph, which peft and checkpointing are tested with)."""
    if torch.compiler.is_compiling():  # inside a compiled block: the block's graph fuses it
        return norm_rope(x, weight, eps, cos, sin, num_heads)
    if x.is_cuda and not torch.is_grad_enabled():
        return compiled_norm_rope(x, weight, eps, cos, sin, num_heads)
    return norm_rope(x, weight, eps, cos, sin, num_heads)


# A streamed chunk rotates every cached key of every layer: one fused pass instead of ~10 in float32.
compiled_rotate = CompiledWithFallback(rotate)


def fused_rotate(
    normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, dtype: torch.dtype
) -> torch.Tensor:
    """`rotate`, compiled into one kernel for CUDA inference; eager under autograd and on the CPU."""
    if torch.compiler.is_compiling():  # inside a compiled block: the block's graph fuses it
        return rotate(normed, cos, sin, num_heads, dtype)
    if normed.is_cuda and not torch.is_grad_enabled():
        return compiled_rotate(normed, cos, sin, num_heads, dtype)
    return rotate(normed, cos, sin, num_heads, dtype)


def self_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SparseLayout | ChunkLayout | None,
    backend: str,
) -> torch.Tensor:
    """Dense (layout None) or sparse attention, (b, heads, tokens, head_dim) in and out. Under sequence
    parallelism `heads` is this process's share of them: a layout covers tokens, not heads. A streamed chunk's
    ChunkLayout has the chunk's queries and the cached + chunk keys."""
    if layout is None:
        return dense_attention(query, key, value)
    if isinstance(layout, SparseLayout) and layout.num_tokens != query.shape[2]:
        raise ValueError(
            f"sparse layout covers {layout.num_tokens} tokens ({layout.num_frames} frames x "
            f"{layout.grid_size}), the DiT sees {query.shape[2]}: build the layout for this clip's latent grid"
        )
    return sparse_attention(query, key, value, layout, backend)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    layout: SparseLayout | ChunkLayout | None,
    backend: str,
) -> torch.Tensor:
    """`self_attention` on q, k, v (b, s, heads * head_dim) after RoPE -> (b, s, heads * head_dim)."""
    q, k, v = (rearrange(t, "b s (n d) -> b n s d", n=num_heads) for t in (q, k, v))
    return rearrange(self_attention(q, k, v, layout, backend), "b n s d -> b s (n d)")


class RoutedAttention(nn.Module):
    """Replaces diffsynth's AttentionModule: q, k, v (b, s, heads * head_dim) after RoPE -> (b, s, heads *
    head_dim), dense or sparse as `attention` says. With `attention.shards` the s tokens are this process's
    shard of the clip: Ulysses all-to-alls (iasa.parallel.ulysses_attention) give `self_attention` every token
    of heads / N heads, and hand the result back as this shard's tokens of all heads. (A streaming key/value
    cache under sequence parallelism belongs inside that call, after the first all-to-all: each process keeps
    every token's keys and values of its own heads.) Under torch.compile (iasa.video.compiled_blocks) the
    attention is one opaque custom op whose inputs include the layout's tensors, so a new layout is new data for
    the same compiled graph."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention: SelfAttentionArgs) -> torch.Tensor:
        layout = attention.layout
        if attention.shards is not None:

            def attend_heads(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
                return self_attention(query, key, value, layout, attention.backend)

            q, k, v = (rearrange(t, "b s (n d) -> b s n d", n=self.num_heads) for t in (q, k, v))
            return rearrange(ulysses_attention(q, k, v, attend_heads, attention.shards), "b s n d -> b s (n d)")
        if not torch.compiler.is_compiling():
            return attend(q, k, v, self.num_heads, layout, attention.backend)
        if layout is None:
            return self_attention_op(q, k, v, self.num_heads, None, None, 0, 0, 0, attention.backend)
        if isinstance(layout, ChunkLayout):
            return chunk_self_attention_op(
                q, k, v, self.num_heads, layout.frame_selection, layout.query_regions, layout.key_frames,
                layout.key_regions, *layout.grid_size, layout.region_ids, layout.block_size, attention.backend,
            )  # fmt: skip
        return self_attention_op(
            q, k, v, self.num_heads, layout.frame_selection, layout.token_regions, *layout.grid_size,
            layout.block_size, attention.backend,
        )  # fmt: skip


class RoutedSelfAttention(SelfAttention):
    """diffsynth's SelfAttention with the project's forward (same submodules, same parameters)."""

    attn: RoutedAttention

    def forward(self, x: torch.Tensor, attention: SelfAttentionArgs) -> torch.Tensor:
        """x (b, s, dim) -> (b, s, dim)."""
        cos, sin = attention.rope_cos, attention.rope_sin
        q = fused_norm_rope(self.q(x), self.norm_q.weight, self.norm_q.eps, cos, sin, self.num_heads)
        if attention.streamed is not None:
            return self.o(self.attn(q, *self.streamed_keys_values(x, attention), attention))
        k = fused_norm_rope(self.k(x), self.norm_k.weight, self.norm_k.eps, cos, sin, self.num_heads)
        return self.o(self.attn(q, k, self.v(x), attention))

    def streamed_keys_values(self, x: torch.Tensor, attention: SelfAttentionArgs) -> tuple[torch.Tensor, torch.Tensor]:
        """A streamed chunk's keys and values (b, key_stop - key_start, dim), views of the stream cache: the
        chunk's own, written in place (normed, unrotated keys for the cache; rotated ones for this chunk), and
        the cached ones rotated to this chunk's positions for them."""
        streamed = attention.streamed
        cache = streamed.cache
        keys, values = streamed.layer.keys, streamed.layer.values
        normed = rms_normed(self.k(x), self.norm_k.weight, self.norm_k.eps)
        keys.index_copy_(1, streamed.chunk_positions, normed.to(x.dtype))
        values.index_copy_(1, streamed.chunk_positions, self.v(x))
        # Rotated from the float32 norm, as the full clip's keys are; the cache keeps them in the model dtype.
        own = fused_rotate(normed, attention.rope_cos, attention.rope_sin, self.num_heads, x.dtype)
        cache.rotated.index_copy_(1, streamed.chunk_positions, own)
        past = slice(streamed.past_start, streamed.past_stop)
        if streamed.past_stop > streamed.past_start:
            cache.rotated[:, past] = fused_rotate(keys[:, past], streamed.past_cos, streamed.past_sin, self.num_heads, x.dtype)
        window = slice(streamed.key_start, streamed.key_stop)
        return cache.rotated[:, window], values[:, window]


def patch_self_attention(dit: nn.Module) -> None:
    """Make every DiT block's self-attention the project's (idempotent)."""
    for block in dit.blocks:
        if not isinstance(block.self_attn.attn, RoutedAttention):
            block.self_attn.attn = RoutedAttention(block.self_attn.num_heads)
        # A class swap, not a new module: the linears (peft-wrapped or not) and norms stay where they are.
        block.self_attn.__class__ = RoutedSelfAttention


def is_patched(dit: nn.Module) -> bool:
    return all(isinstance(block.self_attn, RoutedSelfAttention) for block in dit.blocks)
