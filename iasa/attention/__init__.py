"""Input-aware sparse attention (paper section 3.2): layouts from keypoints, and the kernels that use them.

Data flow, one module per idea:
    keypoints -> pose_distance (Procrustes, per video frame pair) -> latent frames (iasa.video.latent_grid)
              -> frame_selection (global mask: top-K frames)                      -> SparseLayout
    keypoints -> regions (local mask: polygons -> pixels -> tokens, priorities)   -> SparseLayout
    build.build_sparse_layout does both. masks: the rule, stated once as a table over (frame, region)
    classes, its mask_mod and the dense mask; block_layout: (frame, region) reordering, tile counts,
    density statistics.
    Kernels: reference (dense-mask SDPA), flex (FlexAttention block mask), fast (own-frame + region
    kernels, another module); dispatch.sparse_attention picks one.
"""

from iasa.attention.block_layout import (
    BlockLayout,
    block_layout,
    density_statistics,
    frame_region_order,
    inverse_permutation,
)
from iasa.attention.build import build_sparse_layout, token_grid
from iasa.attention.config import SparseAttentionConfig
from iasa.attention.layout import BACKGROUND, SparseLayout
from iasa.attention.masks import dense_mask
from iasa.attention.dispatch import BACKENDS, sparse_attention

__all__ = [
    "BACKENDS",
    "BACKGROUND",
    "BlockLayout",
    "SparseAttentionConfig",
    "SparseLayout",
    "block_layout",
    "build_sparse_layout",
    "dense_mask",
    "density_statistics",
    "frame_region_order",
    "inverse_permutation",
    "sparse_attention",
    "token_grid",
]
