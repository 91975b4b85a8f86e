"""SMPL-X motion to 2D whole-body keypoints, skeleton drawing and keypoint files.

The two calls the video stage uses, importable from here:
``motion_to_keypoints(motion, config, smplx_dir=None, reference=None) -> WholeBodyKeypoints``
(iasa.pose.pipeline) and ``draw_pose_frames(keypoints, style) -> (F, H, W, 3) uint8`` (iasa.pose.drawing; the
styles in iasa.pose.style).
They are loaded on first use so that ``iasa.pose.keypoints`` stays a light import.
"""

from typing import Any

_LAZY = {"motion_to_keypoints": "iasa.pose.pipeline", "draw_pose_frames": "iasa.pose.drawing"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iasa.pose' has no attribute {name!r}")
