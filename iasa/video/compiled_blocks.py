"""Regional compilation of the DiT: one compiled block function, reused by all 40 blocks (`speed.compile_dit`).

torch.compile sees one DiT block at a time (a 40x smaller graph than the whole model, compiled once: the
blocks share code and shapes, and their parameters are graph inputs, not constants). Inductor then fuses
each block's elementwise chain (modulation, LayerNorms, gates, residual adds, GELU, RMSNorm + RoPE) into a
few kernels and, with FP8 linears, the activation quantisation (amax, scale, e4m3 cast) into the kernel
that produces the activation.

Attention stays out of the graph's reach but inside it: `iasa::self_attention` is a custom op, opaque to
the compiler (no graph break), whose inputs are q, k, v and the sparse layout's tensors. So a new clip, a
new pose (a new layout), a new timestep or a new window is new data for the same graph: no recompilation.
Shapes are static (`dynamic=False`): one graph per token-grid shape (a resolution, a window length), the
kernels tuned for it. The op's eager body finds the layout object by its tensors (layouts are registered
by `SelfAttentionArgs.for_forward`), so every kernel keeps its per-layout plan cache.

Inference only: the op has no autograd formula (training runs the eager blocks, with checkpointing).
"""

from __future__ import annotations

import weakref
import torch
from torch import nn

from iasa.attention.layout import SparseLayout
from iasa.video.fast_compile import CompiledWithFallback

# Recompilations allowed per block code before torch.compile gives up on it (one per grid shape in use).
BLOCK_RECOMPILE_LIMIT = 8

# id(token_regions) -> layout; an entry lives as long as its layout.
_LAYOUTS: "weakref.WeakValueDictionary[int, SparseLayout]" = weakref.WeakValueDictionary()


def register_layout(layout: SparseLayout) -> None:
    """Make `layout` findable from its tensors inside the compiled block (called once per DiT forward)."""
    _LAYOUTS[id(layout.token_regions)] = layout


def layout_of(
    frame_selection: torch.Tensor, token_regions: torch.Tensor, grid_size: tuple[int, int], block_size: int
) -> SparseLayout:
    """The registered layout holding these very tensors; else (tensors the compiler copied) a new layout object
    with them, correct but without the kernels' cached plan."""
    layout = _LAYOUTS.get(id(token_regions))
    if layout is not None and layout.token_regions is token_regions and layout.frame_selection is frame_selection:
        return layout
    return SparseLayout(frame_selection, token_regions, grid_size, block_size)


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
