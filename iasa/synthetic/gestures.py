"""Gesture styles of synthetic speakers: named settings of the procedural motion generator's knobs.

A style changes how a speaker moves (how big and how often the beats are, which hand beats, where the
hands rest, how much the head moves), not what triggers the movement (the speech's onsets and loudness).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from iasa.motion.procedural import ProceduralMotionConfig

GESTURE_STYLES: dict[str, dict[str, Any]] = {
    "neutral": {},
    "calm": {"beat_shoulder_rad": 0.18, "beat_elbow_rad": 0.25, "nod_rad": 0.07, "sway_rad": 0.025, "beat_min_gap_s": 0.7},
    "animated": {
        "beat_shoulder_rad": 0.55, "beat_elbow_rad": 0.75, "nod_rad": 0.16, "sway_rad": 0.06, "beat_min_gap_s": 0.35,
        "beat_hand_open": 0.9,
    },
    "left_handed": {"beat_arm_weights": (0.75, 0.05, 0.2)},
    "right_handed": {"beat_arm_weights": (0.05, 0.75, 0.2)},
    "hands_high": {"arm_forward_rad": 0.45, "elbow_bend_rad": 1.55},
    "hands_low": {"arm_forward_rad": 0.25, "elbow_bend_rad": 1.3, "arm_abduction_rad": 0.18},
    "expressive_head": {"nod_rad": 0.2, "sway_rad": 0.07, "jaw_open_max_rad": 0.38},
}  # fmt: skip


def motion_config(style: str, seed: int) -> ProceduralMotionConfig:
    """The procedural motion config of gesture ``style`` with random choices from ``seed``."""
    if style not in GESTURE_STYLES:
        raise ValueError(f"unknown gesture style '{style}'; choose one of {', '.join(GESTURE_STYLES)}")
    return replace(ProceduralMotionConfig(seed=seed), **GESTURE_STYLES[style])
