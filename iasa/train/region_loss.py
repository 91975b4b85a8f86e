"""Region-weighted reconstruction loss on decoded frames (paper section 3.3):
L_region = sum_r lambda_r L_r(m_r x, m_r x_hat), with region masks m_r rasterised from the keypoints.

Terms: a region-weighted mean absolute pixel error (default, needs no model file), LPIPS per region and a
face-identity distance on face crops. The last two load TorchScript models from paths in the config and
are only built when their weight is non-zero. A TorchScript file is code that runs when it is loaded, so
these paths must name files the user trusts (their own export); DistillConfig refuses paths inside the
data cache or the run folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from iasa.errors import MissingFileError
from iasa.attention.config import LayoutRuleConfig
from iasa.attention.regions import REGION_DRAWERS, frame_shapes, validate_regions
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.train.config import RegionLossConfig

BACKGROUND = "background"
FACE_CROP = 112
EPS = 1e-6


def region_masks(
    keypoints: WholeBodyKeypoints, regions: list[str], size: tuple[int, int], sparse: LayoutRuleConfig
) -> torch.Tensor:
    """Exclusive pixel masks (F, R, H, W) float of the listed regions (BACKGROUND = the rest), the first
    listed region winning where they overlap."""
    drawn = [name for name in regions if name != BACKGROUND]
    validate_regions(drawn)
    frames = frame_shapes(keypoints, size, sparse)
    masks = np.zeros((len(frames), len(regions), *size), dtype=bool)
    taken = np.zeros((len(frames), *size), dtype=bool)
    canvas = np.zeros(size, dtype=np.uint8)
    for index, name in enumerate(regions):
        if name == BACKGROUND:
            continue
        for t, frame in enumerate(frames):
            canvas.fill(0)
            REGION_DRAWERS[name](canvas, frame)
            masks[t, index] = (canvas > 0) & ~taken[t]
        taken |= masks[:, index]
    if BACKGROUND in regions:
        masks[:, regions.index(BACKGROUND)] = ~taken
    return torch.from_numpy(masks).float()


def decoded_frame_indices(first_latent: int, num_latents: int) -> list[int]:
    """Video frames that a run of latent frames [first_latent, first_latent + num_latents) decodes to when
    decoded on its own: the first latent gives one frame (Wan's causal VAE), every later one four."""
    start = 4 * first_latent
    return list(range(start, start + 1 + 4 * (num_latents - 1)))


def _load_torchscript(path: str | None, what: str, key: str) -> torch.jit.ScriptModule:
    if not path or not Path(path).is_file():
        raise MissingFileError(
            f"region.{key}_weight > 0 needs a {what} TorchScript model, but region.{key}_path={path!r} is not a file; "
            f"export one with torch.jit.save and set region.{key}_path, or set region.{key}_weight=0"
        )
    model = torch.jit.load(path, map_location="cpu").eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class RegionLoss(torch.nn.Module):
    """Callable (x, x_hat, masks) -> scalar; x, x_hat (F, 3, H, W) in [-1, 1], masks (F, R, H, W)."""

    def __init__(self, config: RegionLossConfig) -> None:
        super().__init__()
        self.config = config
        self.regions = list(config.region_weights)
        self.register_buffer("weights", torch.tensor([config.region_weights[name] for name in self.regions]), persistent=False)
        self.lpips = _load_torchscript(config.lpips_path, "LPIPS", "lpips") if config.lpips_weight > 0 else None
        if config.face_id_weight > 0:
            if "face" not in self.regions:
                raise ValueError("region.face_id_weight > 0 needs a 'face' entry in region.region_weights")
            self.face_id = _load_torchscript(config.face_id_path, "face identity", "face_id")
        else:
            self.face_id = None

    def pixel_term(self, x: torch.Tensor, x_hat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """sum_r lambda_r * mean over region r's pixels of |x - x_hat| (channel mean); empty regions add 0."""
        error = rearrange((x - x_hat).abs().mean(dim=1), "f h w -> f 1 h w")
        per_region = (error * masks).sum(dim=(0, 2, 3)) / (masks.sum(dim=(0, 2, 3)) + EPS)
        return (per_region * self.weights.to(per_region)).sum()

    def lpips_term(self, x: torch.Tensor, x_hat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for index in range(len(self.regions)):
            mask = masks[:, index : index + 1]
            total = total + self.weights[index] * self.lpips(x * mask, x_hat * mask).mean()
        return total

    def face_id_term(self, x: torch.Tensor, x_hat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity of identity embeddings of the face's bounding box, over frames with a face."""
        face = masks[:, self.regions.index("face")]
        distances = []
        for t in range(x.shape[0]):
            rows, cols = torch.nonzero(face[t], as_tuple=True)
            if rows.numel() == 0:
                continue
            box = (slice(None), slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
            crops = torch.stack([x[t][box], x_hat[t][box]])
            crops = F.interpolate(crops, size=(FACE_CROP, FACE_CROP), mode="bilinear", align_corners=False)
            embeddings = F.normalize(self.face_id(crops).float(), dim=-1)
            distances.append(1 - (embeddings[0] * embeddings[1]).sum())
        return torch.stack(distances).mean() if distances else x.new_zeros(())

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = masks.to(x)
        loss = self.config.pixel_weight * self.pixel_term(x, x_hat, masks)
        if self.lpips is not None:
            loss = loss + self.config.lpips_weight * self.lpips_term(x, x_hat, masks)
        if self.face_id is not None:
            loss = loss + self.config.face_id_weight * self.face_id_term(x, x_hat, masks)
        return loss
