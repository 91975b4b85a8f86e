"""Building blocks of EMAGE: waveform encoder, motion conv stacks, MLP, periodic positional encoding.

Attribute names (``feat_extractor``, ``main``, ``fc1`` ...) and the order of modules inside every
``nn.Sequential`` follow the official EMAGE code, because they are the state-dict keys of the
released checkpoints. Layouts: audio (batch, samples); conv stacks take and return (batch, frames,
channels).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

WAV_KERNEL = 15
# (out_dim divided by this gives the output channels, stride, padding of the first conv, has a
# projection shortcut). The strides multiply to 5*6*6*3 = 540 samples per feature; with the 1600-sample padding
# a window of n frames of 16 kHz audio at 30 fps gives n (or n + 1) features.
WAV_STAGES = (
    (4, 5, 1600, True),
    (4, 6, 0, True),
    (4, 1, 7, False),
    (2, 6, 0, True),
    (2, 1, 7, False),
    (1, 3, 0, True),
)
MOTION_CONV_SLOPE = 0.2  # LeakyReLU slope of the motion conv stacks
MLP_SLOPE = 0.1


class WavBlock(nn.Module):
    """Two Conv1d + BatchNorm + LeakyReLU with a residual (projected when shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, WAV_KERNEL, stride=stride, padding=padding)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.act1 = nn.LeakyReLU(inplace=True)
        self.conv2 = nn.Conv1d(out_channels, out_channels, WAV_KERNEL, padding=WAV_KERNEL // 2)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.act2 = nn.LeakyReLU(inplace=True)
        self.downsample = (
            nn.Sequential(
                nn.Conv1d(in_channels, out_channels, WAV_KERNEL, stride=stride, padding=padding),
                nn.BatchNorm1d(out_channels),
            )
            if project
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, samples) -> (batch, out_channels, samples')."""
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class WavEncoder(nn.Module):
    """Raw 16 kHz waveform -> about 30 feature frames per second."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        for divisor, stride, padding, project in WAV_STAGES:
            out_channels = out_dim // divisor
            blocks.append(WavBlock(in_channels, out_channels, stride, padding, project))
            in_channels = out_channels
        self.feat_extractor = nn.Sequential(*blocks)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, out_dim)."""
        features = self.feat_extractor(rearrange(waveform, "b s -> b 1 s"))
        return rearrange(features, "b c t -> b t c")


class ResBlock(nn.Module):
    """Conv1d(k3) - LeakyReLU - Conv1d(k3) plus identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv1d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(MOTION_CONV_SLOPE, inplace=True),
            nn.Conv1d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + x


class MotionConvEncoder(nn.Module):
    """Per-frame motion features -> latents at the same frame rate: ``layers`` x (Conv1d, LeakyReLU,
    ResBlock)."""

    def __init__(self, in_dim: int, channels: int, layers: int) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        for index in range(layers):
            modules += [
                nn.Conv1d(in_dim if index == 0 else channels, channels, 3, 1, 1),
                nn.LeakyReLU(MOTION_CONV_SLOPE, inplace=True),
                ResBlock(channels),
            ]
        self.main = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, frames, in_dim) -> (batch, frames, channels)."""
        return rearrange(self.main(rearrange(x, "b t c -> b c t")), "b c t -> b t c")


class MotionConvDecoder(nn.Module):
    """Latents -> per-frame motion features: two ResBlocks, ``layers`` x (Conv1d, LeakyReLU), Conv1d.
    The last of the ``layers`` convs maps to ``out_dim``."""

    RESIDUAL_BLOCKS = 2

    def __init__(self, channels: int, out_dim: int, layers: int) -> None:
        super().__init__()
        modules: list[nn.Module] = [ResBlock(channels) for _ in range(self.RESIDUAL_BLOCKS)]
        widths = [channels] * layers + [out_dim]
        for index in range(layers):
            modules += [nn.Conv1d(widths[index], widths[index + 1], 3, 1, 1), nn.LeakyReLU(MOTION_CONV_SLOPE, inplace=True)]
        modules.append(nn.Conv1d(out_dim, out_dim, 3, 1, 1))
        self.main = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, frames, channels) -> (batch, frames, out_dim)."""
        return rearrange(self.main(rearrange(x, "b t c -> b c t")), "b c t -> b t c")


class MLP(nn.Module):
    """Linear - LeakyReLU(0.1) - Linear on the last dimension."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.act = nn.LeakyReLU(MLP_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PeriodicPositionalEncoding(nn.Module):
    """Sinusoidal encoding of the frame index modulo ``period``, added to (batch, frames, dim).

    The table is a (persistent) buffer because the official checkpoints store it as
    ``position_embeddings.pe``: (1, period * (max_len // period + 1), dim).
    """

    def __init__(self, dim: int, period: int, max_len: int, dropout: float = 0.1) -> None:
        super().__init__()
        position = torch.arange(period, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(period, dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        repeats = max_len // period + 1
        self.register_buffer("pe", table.repeat(repeats, 1)[None])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])
