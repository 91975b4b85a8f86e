"""Which pose images the guider gets: the drawing style, the channel order, and how a run picks them.

Styles (iasa.pose.drawing draws them):
- "unianimate": body with the two ankle-to-toes limbs and both hands, no face. UniAnimate's
  ``dw_pose_with_foot_wo_face`` images, on which UniAnimate-Wan2.1-14B was trained and is run.
- "face": the same plus the 68 face points (UniAnimate's ``dw_pose_with_foot_with_face`` drawing). This
  project's fine-tuning draws it, so that the guider sees the mouth.
- "auto" (a config value, not a style): the style of the weights that are loaded: the one a LoRA file of
  this project records, else "unianimate" (UniAnimate's checkpoint).

Channel order: every pose image carries the DWPose palette with its channels reversed, as UniAnimate's
guider saw it (iasa.pose.drawing explains why). The order is a constant, not a choice, but LoRA files and
cached training clips record it next to the style, so that images drawn another way are never mixed up
with these.
"""

from __future__ import annotations

import warnings
from typing import Mapping

from iasa.errors import InputError

UNIANIMATE_STYLE = "unianimate"
FACE_STYLE = "face"
POSE_STYLES = (UNIANIMATE_STYLE, FACE_STYLE)
AUTO_STYLE = "auto"
# The style UniAnimate's checkpoint was trained with: what "auto" means when no LoRA records another.
CHECKPOINT_STYLE = UNIANIMATE_STYLE
# The DWPose palette reaches the guider as (B, G, R) of its (R, G, B) triples (iasa.pose.drawing).
POSE_CHANNEL_ORDER = "bgr"
# Keys under which LoRA metadata and cache records store the two.
STYLE_KEY, CHANNEL_ORDER_KEY = "pose_style", "pose_channel_order"


class PoseStyleError(InputError, ValueError):
    """A pose style that does not exist, or pose images recorded in a channel order this code does not draw."""


def check_pose_style(style: str, key: str = "pose.style", allow_auto: bool = False) -> str:
    """``style`` if it names a style (or "auto" where allowed), else a PoseStyleError naming ``key``."""
    choices = (*POSE_STYLES, AUTO_STYLE) if allow_auto else POSE_STYLES
    if style not in choices:
        raise PoseStyleError(f"{key} must be one of {list(choices)}, got {style!r}")
    return style


def pose_format_record(style: str) -> dict[str, str]:
    """What a LoRA file or a cached training clip records about the pose images it was made with."""
    return {STYLE_KEY: check_pose_style(style), CHANNEL_ORDER_KEY: POSE_CHANNEL_ORDER}


def read_pose_format_record(record: Mapping[str, str], origin: str) -> str | None:
    """The style in ``record`` (written by pose_format_record), or None when it records none (written before
    styles were recorded); a PoseStyleError when it records an unknown style or another channel order."""
    if STYLE_KEY not in record:
        return None
    order = record.get(CHANNEL_ORDER_KEY)
    if order != POSE_CHANNEL_ORDER:
        raise PoseStyleError(
            f"{origin} was made with pose images in channel order {order!r}; this code draws {POSE_CHANNEL_ORDER!r}"
            " (UniAnimate's): retrain it, or rerun data_process, with this version"
        )
    return check_pose_style(record[STYLE_KEY], key=f"{origin}: {STYLE_KEY}")


def resolve_pose_style(requested: str, recorded: str | None, source: str, key: str = "pose.style") -> str:
    """The style to draw: ``requested`` (a config value, style or "auto") against ``recorded``, the style the
    loaded weights (named by ``source``) were trained with, None when they record none.

    "auto" follows the weights, or UniAnimate's checkpoint when they record nothing. A style asked for
    explicitly is drawn even when the weights record another, with a warning: the guider then sees images
    unlike its training ones.
    """
    check_pose_style(requested, key, allow_auto=True)
    if requested == AUTO_STYLE:
        return recorded if recorded is not None else CHECKPOINT_STYLE
    if recorded is not None and recorded != requested:
        warnings.warn(
            f"{key}={requested!r}, but {source} was trained on {recorded!r} pose images; drawing {requested!r} "
            f"as asked (set {key}=auto to follow the weights)",
            stacklevel=2,
        )
    return requested
