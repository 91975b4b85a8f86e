"""Configuration of multi-GPU inference (torchrun): how long a process waits for the others."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParallelConfig:
    # Seconds a collective (all-to-all, gather, broadcast; also joining the group) waits for the other
    # processes before this one fails with an error: a process that died or hangs ends the run on every rank
    # instead of stalling it. The first broadcast waits while rank 0 computes motion, keypoints and layout.
    collective_timeout_s: float = 600.0
