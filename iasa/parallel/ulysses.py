"""Ulysses sequence parallelism for the DiT: tokens split over the processes, self-attention split over heads.

Every process holds a contiguous shard of the clip's (f h w) token sequence through all per-token work
(linears, norms, modulation, cross-attention, feed-forward). Only self-attention needs every token: around
it, one all-to-all turns (this shard's tokens, all heads) into (all tokens, heads / N), the attention runs
on whole sequences for a subset of heads, and an all-to-all turns the result back:

    q, k, v  (b, S/N, heads, d)  --all-to-all-->  (b, S, heads/N, d)  --attention_fn-->  (b, S, heads/N, d)
             --all-to-all-->  (b, S/N, heads, d)

Since each process sees the whole sequence, a per-clip SparseLayout and the sparse kernels apply as they
are: `attention_fn` is any (q, k, v) -> out over (batch, heads, tokens, head_dim), dense SDPA or
`lambda q, k, v: sparse_attention(q, k, v, layout, backend)`.

The all-to-all is yunchang's `SeqAllToAll4D` (long-context-attention, the engine under xDiT/xfuser's
Ulysses attention; pure Python on torch.distributed, autograd-aware, works on gloo and NCCL). Why yunchang's
primitive and not a whole attention layer: yunchang's `UlyssesAttention` and xfuser's
`xFuserLongContextAttention` pick their kernel from a fixed enum (flash-attn, SDPA, sage, ...), with no
place for a per-clip block-sparse layout, and their ring half splits keys over processes, which the
sparse kernels (one softmax over each query's whole allowed key set) cannot take without a per-shard layout
and a log-sum-exp merge. xfuser also brings diffusers, distvae and flash-attn and its own global parallel
state. The communication is the part worth sharing; the attention between the two all-to-alls is ours.

Tokens: S = f*h*w need not divide by N. Shards have ceil(S / N) tokens, the sequence padded with zeros at
its end, so the padding sits in the last shard(s). Per-token work on the padding is harmless, and
`ulysses_attention` drops the padded tokens before `attention_fn` (the padding is never a key, so results
are exact) and pads the output back. `gather_tokens` drops it again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

with warnings.catch_warnings():
    # yunchang's package import reaches its ring kernels, which call the deprecated torch.jit.script.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from yunchang.comm.all_to_all import SeqAllToAll4D

from iasa.errors import InputError
from iasa.parallel.process_group import ParallelGroup, collective

# (batch, heads, tokens, head_dim) query, key, value -> output of the same shape.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# SeqAllToAll4D's dims on (b, s, heads, d): scatter heads and gather tokens, or the reverse.
TOKEN_DIM, HEAD_DIM = 1, 2


class HeadSplitError(InputError, ValueError):
    """A process count that does not divide the attention heads."""


def check_head_split(num_heads: int, world_size: int) -> None:
    """Ulysses gives every process num_heads / world_size heads: raise a clear error when that is no integer."""
    if num_heads % world_size:
        choices = [n for n in range(1, num_heads + 1) if num_heads % n == 0]
        raise HeadSplitError(
            f"{world_size} processes cannot share the DiT's {num_heads} attention heads evenly (sequence "
            f"parallelism gives each process the same number of heads): run torchrun --nproc_per_node with "
            f"one of {choices}"
        )


@dataclass(frozen=True)
class SequenceShards:
    """A sequence of `tokens` tokens split into parallel.world_size contiguous shards of `local_tokens`.

    Shard r holds tokens [r * local_tokens, (r + 1) * local_tokens) of the sequence padded with zeros to
    `padded_tokens` = world_size * local_tokens.
    """

    tokens: int
    parallel: ParallelGroup

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"a sequence needs at least one token, got {self.tokens}")

    @property
    def local_tokens(self) -> int:
        return -(-self.tokens // self.parallel.world_size)

    @property
    def padded_tokens(self) -> int:
        return self.local_tokens * self.parallel.world_size

    @property
    def start(self) -> int:
        """Index of this process's first token in the (padded) sequence."""
        return self.parallel.rank * self.local_tokens


def _pad_tokens(x: torch.Tensor, dim: int, tokens: int) -> torch.Tensor:
    """x with zeros appended along `dim` up to `tokens` entries."""
    missing = tokens - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def shard_tokens(x: torch.Tensor, shards: SequenceShards, dim: int = 1) -> torch.Tensor:
    """This process's shard of x along `dim` (the full sequence of shards.tokens entries): local_tokens
    entries, zeros past the sequence's end. E.g. tokens (b, S, c) -> (b, S/N, c); RoPE (S, 1, d/2), dim=0."""
    if x.shape[dim] != shards.tokens:
        raise ValueError(f"expected {shards.tokens} tokens along dim {dim}, got shape {tuple(x.shape)}")
    if shards.parallel.world_size == 1:
        return x
    real = max(0, min(shards.local_tokens, shards.tokens - shards.start))
    return _pad_tokens(x.narrow(dim, min(shards.start, shards.tokens), real), dim, shards.local_tokens).contiguous()


class _GatherTokens(torch.autograd.Function):
    """All shards concatenated along dim, padding dropped; backward: this shard's slice of the gradient
    (every process continues with the same gathered tensor, so each one's gradient is the whole one)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shards: SequenceShards, dim: int) -> torch.Tensor:
        ctx.shards, ctx.dim = shards, dim
        parallel = shards.parallel
        pieces = [torch.empty_like(x) for _ in range(parallel.world_size)]
        with collective(parallel, "gathering the token shards"):
            dist.all_gather(pieces, x.contiguous(), group=parallel.group)
        return torch.cat(pieces, dim=dim).narrow(dim, 0, shards.tokens)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        shards, dim = ctx.shards, ctx.dim
        padded = _pad_tokens(grad, dim, shards.padded_tokens)
        return padded.narrow(dim, shards.start, shards.local_tokens).contiguous(), None, None


def gather_tokens(x: torch.Tensor, shards: SequenceShards, dim: int = 1) -> torch.Tensor:
    """The whole sequence on every process from each one's shard along `dim` (local_tokens -> tokens)."""
    if x.shape[dim] != shards.local_tokens:
        raise ValueError(f"expected {shards.local_tokens} tokens (one shard) along dim {dim}, got {tuple(x.shape)}")
    if shards.parallel.world_size == 1:
        return x
    return _GatherTokens.apply(x, shards, dim)


def ulysses_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_fn: AttentionFn, shards: SequenceShards
) -> torch.Tensor:
    """Self-attention over the whole sequence from this process's shard of it.

    query, key, value (b, local_tokens, heads, head_dim): this shard's tokens, all heads. attention_fn gets
    (b, heads / N, tokens, head_dim) for the whole sequence (padding dropped) and returns the same shape.
    Returns (b, local_tokens, heads, head_dim), this shard's tokens (zeros at padded positions).
    """
    if query.dim() != 4 or key.shape != query.shape or value.shape != query.shape:
        raise ValueError(
            "expected query, key, value as (batch, tokens, heads, head_dim) of one shape, got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    parallel = shards.parallel
    if query.shape[TOKEN_DIM] != shards.local_tokens:
        raise ValueError(f"expected a shard of {shards.local_tokens} tokens, got {query.shape[TOKEN_DIM]}")
    if parallel.world_size == 1:
        out = attention_fn(*(rearrange(t, "b s n d -> b n s d") for t in (query, key, value)))
        return rearrange(out, "b n s d -> b s n d")
    check_head_split(query.shape[HEAD_DIM], parallel.world_size)
    with collective(parallel, "the all-to-all of q, k, v before self-attention"):
        query, key, value = (
            SeqAllToAll4D.apply(parallel.group, t, HEAD_DIM, TOKEN_DIM, False) for t in (query, key, value)
        )
    query, key, value = (rearrange(t[:, : shards.tokens], "b s n d -> b n s d") for t in (query, key, value))
    out = rearrange(attention_fn(query, key, value), "b n s d -> b s n d")
    out = F.pad(out, (0, 0, 0, 0, 0, shards.padded_tokens - shards.tokens))
    with collective(parallel, "the all-to-all of the self-attention output"):
        return SeqAllToAll4D.apply(parallel.group, out.contiguous(), TOKEN_DIM, HEAD_DIM, False)
