"""Regional compilation of the DiT: one compiled block function, reused by all 40 blocks (`speed.compile_dit`).

torch.compile sees one DiT block at a time (a 40x smaller graph than the whole model, compiled once: the
blocks share code and shapes, and their parameters are graph inputs, not constants). Inductor then fuses
each block's elementwise chain (modulation, LayerNorms, gates, residual adds, GELU, RMSNorm + RoPE) into a
few kernels and, with FP8 linears, the activation quantisation (amax, scale, e4m3 cast) into the kernel
that produces the activation.

Attention stays out of the graph's reach but inside it: `iasa::self_attention` (a full clip's layout) and
`iasa::chunk_self_attention` (a streamed chunk's, iasa.attention.chunk_layout) are custom ops, opaque to the
compiler (no graph break), whose inputs are q, k, v and the layout's tensors. So a new clip, a new pose (a new
layout), a new timestep or a new window is new data for the same graph: no recompilation. Shapes are static
(`dynamic=False`): one graph per token-grid shape (a resolution, a window length), the kernels tuned for it.
The ops' eager bodies find the layout object by its tensors (layouts are registered by
`SelfAttentionArgs.for_forward` and `predict_flow_streamed`), so every kernel keeps its per-layout plan cache.
The flex plan is built before the blocks run (iasa.attention.dispatch.prepare_sparse_attention): building a
BlockMask runs vmap, which fails inside a custom op. For the same reason FlexAttention's eager CPU reference
cannot run in the op: compiled blocks with the flex kernel want CUDA, where the kernel is compiled (on the CPU
the first call fails and the blocks fall back to eager with a warning).

A streamed chunk (iasa.video.denoiser.predict_flow_streamed) runs the same block function: its self-attention
writes the chunk's keys and values into the stream cache, in place, and reads the cache's buffers, one layer's
views at a time (graph inputs of one shape whatever the layer, so the 40 blocks share one graph). Under the
sparse rule every chunk reads the whole buffer, padding included, so one graph serves a stream from its first
chunk on (iasa.video.streaming.generate_chunk says which chunks run compiled).

Inference only: the op has no autograd formula (training runs the eager blocks, with checkpointing).
"""

from __future__ import annotations

import weakref
import torch
from torch import nn

from iasa.attention.chunk_layout import ChunkLayout
from iasa.attention.layout import SparseLayout
from iasa.video.fast_compile import CompiledWithFallback

# Recompilations allowed per block code before torch.compile gives up on it (one per grid shape in use).
BLOCK_RECOMPILE_LIMIT = 8

# ids of a layout's tensors (layout_tensors) -> layout; an entry lives as long as its layout.
_LAYOUTS: "weakref.WeakValueDictionary[tuple[int, ...], SparseLayout | ChunkLayout]" = weakref.WeakValueDictionary()


def layout_tensors(layout: SparseLayout | ChunkLayout) -> tuple[torch.Tensor, ...]:
    """What the attention op receives of a layout: frame_selection, token_regions (a full clip's);
    frame_selection, query_regions, key_frames, key_regions (a streamed chunk's)."""
    if isinstance(layout, ChunkLayout):
        return layout.frame_selection, layout.query_regions, layout.key_frames, layout.key_regions
    return layout.frame_selection, layout.token_regions


def register_layout(layout: SparseLayout | ChunkLayout) -> None:
    """Make `layout` findable from its tensors inside the compiled block (called once per DiT forward)."""
    _LAYOUTS[tuple(id(t) for t in layout_tensors(layout))] = layout


def registered_layout(tensors: tuple[torch.Tensor, ...]) -> SparseLayout | ChunkLayout | None:
    """The registered layout holding these very tensors, None if there is none (tensors the compiler copied)."""
    layout = _LAYOUTS.get(tuple(id(t) for t in tensors))
    if layout is not None and all(mine is given for mine, given in zip(layout_tensors(layout), tensors)):
        return layout
    return None


def layout_of(
    frame_selection: torch.Tensor, token_regions: torch.Tensor, grid_size: tuple[int, int], block_size: int
) -> SparseLayout:
    """The registered layout holding these very tensors; else a new layout object with them, correct but without
    the kernels' cached plan."""
    layout = registered_layout((frame_selection, token_regions))
    return layout if layout is not None else SparseLayout(frame_selection, token_regions, grid_size, block_size)


@torch.library.custom_op("iasa::self_attention", mutates_args=())
def self_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    frame_selection: torch.Tensor | None,
    token_regions: torch.Tensor | None,
    grid_height: int,
    grid_width: int,
    block_size: int,
    backend: str,
) -> torch.Tensor:
    """q, k, v (b, s, heads * head_dim) after RoPE -> (b, s, heads * head_dim) contiguous; dense attention when
    the layout's tensors are None, else the sparse kernel `backend` under their layout."""
    from iasa.video.attention_patch import attend

    layout = None
    if token_regions is not None:
        layout = layout_of(frame_selection, token_regions, (grid_height, grid_width), block_size)
    return attend(q, k, v, num_heads, layout, backend).contiguous()


@self_attention_op.register_fake
def _(q, k, v, num_heads, frame_selection, token_regions, grid_height, grid_width, block_size, backend):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("iasa::chunk_self_attention", mutates_args=())
def chunk_self_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    frame_selection: torch.Tensor,
    query_regions: torch.Tensor,
    key_frames: torch.Tensor,
    key_regions: torch.Tensor,
    grid_height: int,
    grid_width: int,
    region_ids: int,
    block_size: int,
    backend: str,
) -> torch.Tensor:
    """A streamed chunk: q (b, Sq, heads * head_dim) of its tokens, k, v (b, Sk, heads * head_dim) of the cache
    buffer, after RoPE -> (b, Sq, heads * head_dim) contiguous, the sparse kernel `backend` under the ChunkLayout
    of these tensors (iasa.attention.chunk_layout)."""
    from iasa.video.attention_patch import attend

    tensors = (frame_selection, query_regions, key_frames, key_regions)
    layout = registered_layout(tensors)
    if layout is None:
        layout = ChunkLayout(*tensors, (grid_height, grid_width), region_ids, block_size)
    return attend(q, k, v, num_heads, layout, backend).contiguous()


@chunk_self_attention_op.register_fake
def _(q, k, v, num_heads, frame_selection, query_regions, key_frames, key_regions, grid_height, grid_width,
      region_ids, block_size, backend):  # fmt: skip
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def run_block(block: nn.Module, x: torch.Tensor, context: torch.Tensor, t_mod: torch.Tensor, attention) -> torch.Tensor:
    """One DiT block: x (b, s, dim), context (b, 257 + L, dim), t_mod (b, 6, dim) -> (b, s, dim)."""
    return block(x, context, t_mod, attention)


def compile_block_function(backend: str = "inductor") -> CompiledWithFallback[torch.Tensor]:
    """`run_block` under torch.compile: fullgraph (a graph break is a compile error, not a silent slowdown),
    static shapes; if compiling fails, eager blocks with a warning (the error is kept on the returned object)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, name, max(getattr(config, name), BLOCK_RECOMPILE_LIMIT))
    return CompiledWithFallback(run_block, dynamic=False, backend=backend)


_COMPILED: dict[str, CompiledWithFallback[torch.Tensor]] = {}


def compiled_block(backend: str = "inductor") -> CompiledWithFallback[torch.Tensor]:
    """The process's one compiled block function per compiler backend (its compiled graphs are cached in it)."""
    if backend not in _COMPILED:
        _COMPILED[backend] = compile_block_function(backend)
    return _COMPILED[backend]


def reset_compiled_blocks() -> None:
    """Forget every compiled graph (the block function's, the flex kernel's, Dynamo's caches): the next call
    compiles afresh, as in a new process. For a process that runs many shapes one after another (the streaming
    bench): on an H200 its eighth record, compiled after seven others, fell back to FlexAttention's dense eager
    reference (out of memory at 720x1280) and FP8 blocks failed to compile, while each ran alone did not."""
    _COMPILED.clear()
    torch._dynamo.reset()
