"""Configuration of input-aware sparse attention (paper section 3.2): the rule that turns keypoints into a
layout. The kernel that runs a layout is chosen where attention runs (iasa.video.config.AttentionConfig)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from iasa.config import ConfigValueError, check, check_choice
from iasa.video.latent_grid import TOKEN_STRIDE


@dataclass
class LayoutRuleConfig:
    """The layout rule for either attention direction (data_process caches one layout per direction)."""

    # How many pose-similar frames each latent query frame attends to across frames (the paper's K).
    top_k: int = 4
    # Latent frame 0 holds the reference image: keep it visible to every frame on top of the K chosen.
    keep_first_frame: bool = True
    # Allow a scale in the rigid alignment of two poses (similarity instead of rotation + translation).
    align_scale: bool = False
    # Keypoints with a confidence below this are left out of both sides of a pose comparison, and out of
    # the region polygons.
    min_keypoint_confidence: float = 0.3
    # Compare the centroid of each hand on top of the 12 head and upper-body points (see pose_distance.py).
    pose_hand_centroids: bool = True
    # Region labels; the first listed wins where regions overlap. Any of: face, hands (or left_hand and
    # right_hand), arms, torso.
    regions: tuple[str, ...] = ("face", "left_hand", "right_hand", "arms")
    # Width of the arm and shoulder limbs of the "arms" region, as a fraction of the shoulder width.
    limb_width: float = 0.2
    # A token belongs to a region when at least this fraction of its pixels lies inside the region's
    # polygon in some video frame of its latent frame.
    min_token_coverage: float = 0.25
    # Grow every region by this many tokens, to tolerate keypoint jitter.
    dilation_tokens: int = 1
    # Pixels per token side at which regions are drawn (the DiT's token: VAE stride 8 x patch size 2).
    token_stride: int = TOKEN_STRIDE
    # Tile size of block-sparse kernels (stored in the layout).
    block_size: int = 128
    # False: global-only attention, the frame selection without the region restriction (every token of a chosen
    # frame is visible; iasa.attention.layout.without_regions). True: global + local, the paper's rule.
    local_regions: bool = True

    def validate(self) -> None:
        from iasa.attention.regions import validate_regions

        check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0 (0 = only the own frame and frame 0)")
        check(0 <= self.min_keypoint_confidence <= 1, "min_keypoint_confidence", self.min_keypoint_confidence, "must be in [0, 1]")
        try:
            validate_regions(self.regions)
        except ValueError as error:
            raise ConfigValueError("regions", list(self.regions), str(error)) from None
        check(self.limb_width > 0, "limb_width", self.limb_width, "must be > 0 (a fraction of the shoulder width)")
        check(0 < self.min_token_coverage <= 1, "min_token_coverage", self.min_token_coverage, "must be in (0, 1]")
        check(self.dilation_tokens >= 0, "dilation_tokens", self.dilation_tokens, "must be >= 0")
        check(self.token_stride >= 1, "token_stride", self.token_stride, "must be >= 1")
        check(self.block_size >= 1, "block_size", self.block_size, "must be >= 1")

    def for_direction(self, direction: str) -> "SparseAttentionConfig":
        """This rule for one attention direction."""
        return SparseAttentionConfig(
            **{field.name: getattr(self, field.name) for field in fields(LayoutRuleConfig)}, direction=direction
        )


@dataclass
class SparseAttentionConfig(LayoutRuleConfig):
    """The layout rule of one attention direction: what build_sparse_layout takes."""

    # "past": only earlier latent frames (causal student); "both": any other frame (bidirectional teacher).
    direction: str = "past"

    def validate(self) -> None:
        from iasa.attention.frame_selection import DIRECTIONS

        super().validate()
        check_choice("direction", self.direction, DIRECTIONS)
