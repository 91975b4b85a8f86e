"""FGD (Frechet gesture distance) with EMAGE's skeleton-conv motion autoencoder (AESKConv_240_100.bin).

The encoder sees SMPL-X motion as rot6d per joint, one "edge" per joint (edge i links joint i to its
parent; edge 0 links the pelvis to a virtual joint). Each of its 4 stages is a skeleton convolution:
a temporal conv (kernel 4, stride 2) whose output channels of an edge only read edges within 2 hops
of it, then mean-pooling of pairs of consecutive edges along each limb chain (the last stage pools
each whole chain into one). 32 frames of (32, 55 x 6) become 2 latent frames of 20 chains x 12 = 240
features; FGD is the Frechet distance between the latent frames of generated and real motion.

Only the encoder is built: FGD never decodes. Loading checks the encoder keys strictly and that all
other keys of the file belong to the decoder. Key names follow emage_evaltools (motion_encoder.py,
skeleton.py, skeleton_DME.py), which ported them from DeepMotionEditing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from iasa.eval.frechet import frechet_distance
from iasa.motion.rotation import axis_angle_to_rot6d

# Parent of each SMPL-X joint (its kintree_table row 0; the root has none).
SMPLX_PARENTS = (
    (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15)
    + (20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38)
    + (21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53)
)
ROT6D = 6  # channels per edge at the input
CHANNEL_GROWTH = (1, 1, 2, 1)  # channels per edge multiply by these, stage by stage
KERNEL = 4
STRIDE = 2
NEIGHBOUR_DISTANCE = 2  # an edge's outputs read the edges at most this many hops away
GROUP_NORM_GROUPS = 10
LATENT_DIMS = 240
CLIP_FRAMES = 32  # FGD crops motion to a multiple of this many frames
DECODER_PREFIXES = ("decoder.", "fc_mu.", "fc_logvar.")

Edge = tuple[int, int]


def edge_topology(parents: Sequence[int]) -> list[Edge]:
    """(parent, child) per joint; the root's edge goes to a virtual joint numbered len(parents)."""
    return [(0, len(parents))] + [(parents[joint], joint) for joint in range(1, len(parents))]


def edge_hops(edges: Sequence[Edge]) -> np.ndarray:
    """(edges, edges) number of hops between edges; edges sharing a joint are 1 hop apart."""
    count = len(edges)
    unreachable = 10**6
    hops = np.full((count, count), unreachable)
    for i, a in enumerate(edges):
        for j, b in enumerate(edges):
            if set(a) & set(b):
                hops[i, j] = 1
    np.fill_diagonal(hops, 0)
    for k in range(count):  # Floyd-Warshall
        hops = np.minimum(hops, hops[:, k : k + 1] + hops[k : k + 1, :])
    return hops


def neighbour_edges(edges: Sequence[Edge], max_hops: int = NEIGHBOUR_DISTANCE) -> list[list[int]]:
    hops = edge_hops(edges)
    return [list(np.flatnonzero(row <= max_hops)) for row in hops]


def limb_chains(edges: Sequence[Edge]) -> list[list[int]]:
    """Edge indices of each chain between branching joints (degree > 2, root excepted) and end
    effectors, in depth-first order from the root, children visited in edge order."""
    degree: dict[int, int] = {}
    for parent, child in edges:
        degree[parent] = degree.get(parent, 0) + 1
        degree[child] = degree.get(child, 0) + 1
    chains: list[list[int]] = []

    def walk(joint: int, chain: list[int]) -> None:
        if degree[joint] > 2 and joint != 0:
            chains.append(chain)
            chain = []
        if degree[joint] == 1:
            chains.append(chain)
            return
        for index, (parent, child) in enumerate(edges):
            if parent == joint:
                walk(child, chain + [index])

    walk(0, [])
    return chains


def pooling_groups(edges: Sequence[Edge], last: bool) -> tuple[list[list[int]], list[Edge]]:
    """Groups of edges averaged into one, and the coarser edges they become. Chains are pooled in
    consecutive pairs (an odd chain keeps its first edge alone); the last stage pools whole chains."""
    groups: list[list[int]] = []
    coarse: list[Edge] = []
    for chain in limb_chains(edges):
        if last:
            groups.append(chain)
            continue
        if len(chain) % 2 == 1:
            groups.append([chain[0]])
            coarse.append(edges[chain[0]])
            chain = chain[1:]
        for first, second in zip(chain[0::2], chain[1::2]):
            groups.append([first, second])
            coarse.append((edges[first][0], edges[second][1]))
    return groups, coarse


class SkeletonConv(nn.Module):
    """Conv1d over (batch, edges * channels, frames) whose weight is masked so that output edge i
    reads only its neighbour edges."""

    def __init__(
        self, neighbours: list[list[int]], in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
    ) -> None:
        super().__init__()
        edges = len(neighbours)
        in_per_edge, out_per_edge = in_channels // edges, out_channels // edges
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        mask = torch.zeros(out_channels, in_channels, kernel_size)
        for edge, near in enumerate(neighbours):
            columns = [k * in_per_edge + c for k in near for c in range(in_per_edge)]
            mask[edge * out_per_edge : (edge + 1) * out_per_edge, columns] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (self.padding, self.padding))
        return F.conv1d(padded, self.weight * self.mask, self.bias, stride=self.stride)


class SkeletonPool(nn.Module):
    """Averages groups of edges: (batch, edges * c, frames) -> (batch, groups * c, frames)."""

    def __init__(self, groups: list[list[int]], num_edges: int, channels_per_edge: int) -> None:
        super().__init__()
        weight = torch.zeros(len(groups) * channels_per_edge, num_edges * channels_per_edge)
        for group_index, group in enumerate(groups):
            for edge in group:
                for c in range(channels_per_edge):
                    weight[group_index * channels_per_edge + c, edge * channels_per_edge + c] = 1.0 / len(group)
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight @ x


class SkeletonResidual(nn.Module):
    """tanh(pool(GroupNorm(skeleton conv k4/s2 (x)) + skeleton conv k1/s2 (x)))."""

    def __init__(self, edges: list[Edge], in_per_edge: int, out_per_edge: int, last: bool) -> None:
        super().__init__()
        neighbours = neighbour_edges(edges)
        in_channels, out_channels = in_per_edge * len(edges), out_per_edge * len(edges)
        padding = (KERNEL - 1) // 2
        self.residual = nn.Sequential(
            SkeletonConv(neighbours, in_channels, out_channels, KERNEL, STRIDE, padding),
            nn.GroupNorm(GROUP_NORM_GROUPS, out_channels),
        )
        self.shortcut = SkeletonConv(neighbours, in_channels, out_channels, 1, STRIDE, 0)
        groups, self.coarse_edges = pooling_groups(edges, last)
        pooled = [SkeletonPool(groups, len(edges), out_per_edge)] if len(groups) != len(edges) else []
        self.common = nn.Sequential(*pooled, nn.Tanh())
        self.out_features = out_per_edge * len(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.common(self.residual(x) + self.shortcut(x))


class SkeletonEncoder(nn.Module):
    """(batch, frames, 55 * 6) rot6d motion -> (batch, frames / 16, 240) latents."""

    def __init__(self, parents: Sequence[int] = SMPLX_PARENTS) -> None:
        super().__init__()
        edges = edge_topology(parents)
        per_edge = ROT6D
        self.layers = nn.ModuleList()
        for stage, growth in enumerate(CHANNEL_GROWTH):
            block = SkeletonResidual(edges, per_edge, per_edge * growth, last=stage == len(CHANNEL_GROWTH) - 1)
            self.layers.append(nn.Sequential(block))
            edges, per_edge = block.coarse_edges, per_edge * growth
        self.out_features = block.out_features

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        x = rearrange(motion, "b t c -> b c t")
        for layer in self.layers:
            x = layer(x)
        return rearrange(x, "b c t -> b t c")


class FgdFeatureExtractor(nn.Module):
    """The encoder half of EMAGE's FGD autoencoder; ``encoder`` matches the checkpoint's prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SkeletonEncoder()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "FgdFeatureExtractor":
        """Load AESKConv_240_100.bin ({"model_state": state dict}, keys maybe prefixed "module.")."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; get AESKConv_240_100.bin from the EMAGE evaluation tools (the "
                "H-Liu1997/EMAGE Hugging Face space, EMAGE/test_sequences/weights/) and pass its path"
            )
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors have many types; all mean an unusable file
            raise ValueError(f"{path} is not a weights-only PyTorch checkpoint ({error})") from error
        state = stored.get("model_state", stored) if isinstance(stored, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds no state dict (expected {{'model_state': ...}})")
        state = {key.removeprefix("module."): value for key, value in state.items()}
        extractor = cls()
        expected = set(extractor.state_dict())
        encoder_state = {key: value for key, value in state.items() if key.startswith("encoder.")}
        missing = sorted(expected - set(encoder_state))
        unexpected = sorted(set(encoder_state) - expected)
        unexpected += sorted(key for key in state if not key.startswith(("encoder.", *DECODER_PREFIXES)))
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match EMAGE's FGD autoencoder: missing keys {missing[:10]}, "
                f"unexpected keys {unexpected[:10]}"
            )
        extractor.load_state_dict(encoder_state, strict=True)
        return extractor.to(device).eval()

    @torch.no_grad()
    def features(self, rot6d_motion: torch.Tensor) -> np.ndarray:
        """(batch, frames, 330) rot6d -> (batch * frames // 16, 240) latent frames; frames past the
        last multiple of 32 are dropped, as in emage_evaltools."""
        usable = rot6d_motion.shape[1] // CLIP_FRAMES * CLIP_FRAMES
        if usable == 0:
            raise ValueError(f"FGD needs at least {CLIP_FRAMES} frames, got {rot6d_motion.shape[1]}")
        device = next(self.parameters()).device
        latents = self.encoder(rot6d_motion[:, :usable].to(device, torch.float32))
        return rearrange(latents, "b t c -> (b t) c").cpu().numpy()


def poses_to_rot6d(poses: np.ndarray) -> torch.Tensor:
    """(frames, 165) SMPL-X axis-angle poses (as in the motion .npz) -> (1, frames, 330) rot6d, the
    encoder's input."""
    axis_angle = torch.as_tensor(np.asarray(poses, dtype=np.float32))
    return rearrange(axis_angle_to_rot6d(rearrange(axis_angle, "t (j d) -> t j d", d=3)), "t j d -> 1 t (j d)")


def fgd(extractor: FgdFeatureExtractor, generated: Sequence[torch.Tensor], real: Sequence[torch.Tensor]) -> float:
    """FGD between clips of generated and real motion, each (1, frames, 330) rot6d (see
    poses_to_rot6d)."""
    generated_features = np.concatenate([extractor.features(clip) for clip in generated])
    real_features = np.concatenate([extractor.features(clip) for clip in real])
    return frechet_distance(generated_features, real_features)
