"""On-disk cache of training clips: one folder per clip, written whole or not at all.

<cache_dir>/<video>_w<k>/
    tensors.safetensors   latents (16, T, h, w), y (20, T, h, w), clip_feature (257, D), context (L, D),
                          pose_video uint8 (3, F, H, W), reference_pose uint8 (3, H, W),
                          layout.<direction>.frame_selection (T, T) bool, layout.<direction>.token_regions (T, N)
    keypoints.npz         the clip's keypoints (WholeBodyKeypoints, cropped)
    meta.json             {"name", "prompt", "layouts": {<direction>: the layout's other fields (SparseLayout.state)},
                           "layout_rule": the data_process layout rule (LayoutRuleConfig),
                           "pose_style", "pose_channel_order": how pose_video and reference_pose were drawn}
<cache_dir>/negative_context.safetensors   the negative prompt's text embedding (1, L, D)
A folder is first written as .<key>.partial and renamed when complete, so a crash leaves no half item.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from iasa.atomic_io import atomic_output
from iasa.attention.config import LayoutRuleConfig
from iasa.attention.layout import SparseLayout
from iasa.errors import InputError
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.style import PoseStyleError, pose_format_record, read_pose_format_record
from iasa.tensor_files import read_tensors

NEGATIVE_CONTEXT_FILE = "negative_context.safetensors"
# The tensor fields of a ClipBatch.
CLIP_TENSORS = ("latents", "context", "negative_context", "clip_feature", "y", "pose_video", "reference_pose")


@dataclass
class ClipBatch:
    """One cached training clip (a batch of one; larger batches come from gradient accumulation).

    latents (1, 16, T, h, w) clean VAE latents; context (1, L, D_text) text embeddings; negative_context
    (1, L, D_text) the negative prompt's; clip_feature (1, 257, D_clip) CLIP tokens of the reference frame;
    y (1, 20, T, h, w) I2V condition (frame mask + first-frame latent); pose_video (1, 3, F, H, W) pose
    images in [0, 1]; reference_pose (1, 3, H, W) pose image of the reference frame in [0, 1];
    layouts: cached SparseLayout per attention direction; keypoints: the clip's F video frames; layout_rule:
    the rule the layouts were built with (the region-loss masks are drawn with it too).
    """

    name: str
    latents: torch.Tensor
    context: torch.Tensor
    negative_context: torch.Tensor
    clip_feature: torch.Tensor
    y: torch.Tensor
    pose_video: torch.Tensor
    reference_pose: torch.Tensor
    layouts: dict[str, SparseLayout] = field(default_factory=dict)
    keypoints: WholeBodyKeypoints | None = None
    layout_rule: LayoutRuleConfig | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ClipBatch":
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() and dtype else tensor.dtype)

        tensors = {name: move(getattr(self, name)) for name in CLIP_TENSORS}
        layouts = {direction: layout.to(device) for direction, layout in self.layouts.items()}
        return replace(self, **tensors, layouts=layouts)


class CacheError(InputError, ValueError):
    """A cache folder that is missing or incomplete."""


def is_cached(cache_dir: Path, key: str) -> bool:
    return (cache_dir / key / "meta.json").is_file()


def write_clip(
    cache_dir: Path,
    key: str,
    tensors: dict[str, torch.Tensor],
    layouts: dict[str, SparseLayout],
    keypoints: WholeBodyKeypoints,
    prompt: str,
    layout_rule: LayoutRuleConfig,
    pose_style: str,
) -> None:
    """layout_rule: the rule the layouts were built with; pose_style: the style pose_video and reference_pose
    were drawn in (iasa.pose.style)."""
    partial = cache_dir / f".{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    flat = {name: value.detach().cpu().contiguous() for name, value in tensors.items()}
    layout_metadata = {}
    for direction, layout in sorted(layouts.items()):
        layout_tensors, layout_metadata[direction] = layout.state()
        flat.update({f"layout.{direction}.{name}": tensor for name, tensor in layout_tensors.items()})
    save_file(flat, str(partial / "tensors.safetensors"))
    keypoints.save(partial / "keypoints.npz")
    meta = {"name": key, "prompt": prompt, "layouts": layout_metadata, "layout_rule": dataclasses.asdict(layout_rule)}
    meta.update(pose_format_record(pose_style))
    (partial / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(cache_dir / key, ignore_errors=True)
    partial.rename(cache_dir / key)


def write_negative_context(cache_dir: Path, context: torch.Tensor) -> None:
    with atomic_output(cache_dir / NEGATIVE_CONTEXT_FILE) as temporary:
        save_file({"context": context.detach().cpu().contiguous()}, str(temporary))


def list_cached(cache_dir: Path) -> list[str]:
    keys = sorted(path.parent.name for path in cache_dir.glob("*/meta.json"))
    if not keys:
        raise CacheError(f"no cached clips in {cache_dir}; run the data_process task (config/data_process.yaml) first")
    return keys


def cached_pose_style(cache_dir: Path, keys: list[str]) -> str:
    """The pose style every listed clip was drawn in; a CacheError when they were drawn in different
    styles or before the style was recorded (those have the old RGB drawing: rerun data_process)."""
    styles = set()
    for key in keys:
        origin = f"cached clip {cache_dir / key}"
        try:
            style = read_pose_format_record(json.loads((cache_dir / key / "meta.json").read_text()), origin)
        except PoseStyleError as error:
            raise CacheError(str(error)) from error
        if style is None:
            raise CacheError(
                f"{origin} records no pose style (cached by an older version); rerun data_process into a fresh "
                "data.cache_dir"
            )
        styles.add(style)
    if len(styles) > 1:
        raise CacheError(
            f"{cache_dir} mixes clips drawn in pose styles {sorted(styles)}; rerun data_process into a fresh "
            "data.cache_dir"
        )
    (style,) = styles
    return style


def read_clip(cache_dir: Path, key: str) -> ClipBatch:
    """A cached clip as a batch of one; pose images become floats in [0, 1]."""
    folder = cache_dir / key
    if not (folder / "meta.json").is_file():
        raise CacheError(f"{folder} is not a complete cached clip; rerun data_process")
    negative = cache_dir / NEGATIVE_CONTEXT_FILE
    if not negative.is_file():
        raise CacheError(f"{negative} is missing; rerun data_process")
    meta = json.loads((folder / "meta.json").read_text())
    if "layouts" not in meta or "layout_rule" not in meta:
        raise CacheError(
            f"{folder} was cached by an earlier version (no layout metadata); delete it and rerun data_process"
        )
    tensors = read_tensors(folder / "tensors.safetensors", what="cached clip")
    layouts = {}
    for direction, metadata in meta["layouts"].items():
        prefix = f"layout.{direction}."
        layout_tensors = {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}
        layouts[direction] = SparseLayout.from_state(layout_tensors, metadata)
    layout_rule = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LayoutRuleConfig), meta["layout_rule"]))
    return ClipBatch(
        name=key,
        latents=tensors["latents"][None],
        context=tensors["context"][None],
        negative_context=read_tensors(negative, what="cached negative prompt")["context"],
        clip_feature=tensors["clip_feature"][None],
        y=tensors["y"][None],
        pose_video=tensors["pose_video"][None].float() / 255,
        reference_pose=tensors["reference_pose"][None].float() / 255,
        layouts=layouts,
        keypoints=WholeBodyKeypoints.load(folder / "keypoints.npz"),
        layout_rule=layout_rule,
    )


def stack_clips(batches: list[ClipBatch]) -> ClipBatch:
    """Clips of one shape as one batch (b, ...) for dense attention: the sparse layouts and keypoints are per
    clip and are left out, and the negative prompt's context is the first clip's (every clip of a cache has the
    same)."""
    if len(batches) == 1:
        return batches[0]
    shapes = {tuple(batch.latents.shape) for batch in batches}
    if len(shapes) > 1:
        raise CacheError(f"clips {[batch.name for batch in batches]} have latents of shapes {sorted(shapes)}; "
                         "stacked clips need one shape: cache them at one data.num_frames / height / width")  # fmt: skip
    stacked = {name: torch.cat([getattr(batch, name) for batch in batches]) for name in CLIP_TENSORS if name != "negative_context"}
    return replace(batches[0], name="+".join(batch.name for batch in batches), **stacked, layouts={}, keypoints=None)


class ClipMemory:
    """read_clip(cache_dir, key).to(device), each clip read from disk once when in_memory (a small cache, such
    as the miniature's, then costs a step no file read and no host-to-device copy), else on every call."""

    def __init__(self, cache_dir: Path, device: torch.device, in_memory: bool) -> None:
        self.cache_dir, self.device, self.in_memory = cache_dir, device, in_memory
        self.clips: dict[str, ClipBatch] = {}

    def read(self, key: str) -> ClipBatch:
        if key in self.clips:
            return self.clips[key]
        clip = read_clip(self.cache_dir, key).to(self.device)
        if self.in_memory:
            self.clips[key] = clip
        return clip


class ClipOrder:
    """Which cached clip every micro-batch reads: a fresh seeded permutation per epoch, a pure function
    of (seed, micro-batch index), so a resumed run reads exactly what the uninterrupted run would have.
    Each process of a multi-GPU run takes every world_size-th item of the permutation."""

    def __init__(self, keys: list[str], seed: int, rank: int = 0, world_size: int = 1) -> None:
        if len(keys) < world_size:
            raise CacheError(f"{len(keys)} cached clips cannot feed {world_size} processes")
        self.keys, self.seed, self.rank, self.world_size = keys, seed, rank, world_size
        self.per_epoch = len(keys) // world_size

    def key(self, micro_batch: int) -> str:
        epoch, position = divmod(micro_batch, self.per_epoch)
        permutation = torch.randperm(len(self.keys), generator=torch.Generator().manual_seed(self.seed + epoch))
        return self.keys[int(permutation[position * self.world_size + self.rank])]
