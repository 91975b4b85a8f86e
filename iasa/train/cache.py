"""On-disk cache of training windows: one folder per window, written whole or not at all.

<cache_dir>/<video>_w<k>/
    tensors.safetensors   latents (16, T, h, w), y (20, T, h, w), clip_feature (257, D), context (L, D),
                          pose_video uint8 (3, F, H, W), reference_pose uint8 (3, H, W),
                          layout.<direction>.frame_selection (T, T) bool, layout.<direction>.token_regions (T, N)
    keypoints.npz         the window's keypoints (WholeBodyKeypoints, cropped)
    meta.json             {"name", "prompt", "grid_size", "directions", "pose_style", "pose_channel_order"}
<cache_dir>/negative_context.safetensors   the negative prompt's text embedding (1, L, D)
A folder is first written as .<key>.partial and renamed when complete, so a crash leaves no half item.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from iasa.atomic_io import atomic_output
from iasa.errors import InputError
from iasa.attention.layout import SparseLayout
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.style import PoseStyleError, pose_format_record, read_pose_format_record
from iasa.tensor_files import read_tensors
from iasa.train.backbone import ClipBatch

NEGATIVE_CONTEXT_FILE = "negative_context.safetensors"


class CacheError(InputError, ValueError):
    """A cache folder that is missing or incomplete."""


def is_cached(cache_dir: Path, key: str) -> bool:
    return (cache_dir / key / "meta.json").is_file()


def write_window(
    cache_dir: Path,
    key: str,
    tensors: dict[str, torch.Tensor],
    layouts: dict[str, SparseLayout],
    keypoints: WholeBodyKeypoints,
    prompt: str,
    pose_style: str,
) -> None:
    """pose_style: the style pose_video and reference_pose were drawn in (iasa.pose.style)."""
    partial = cache_dir / f".{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    flat = {name: value.detach().cpu().contiguous() for name, value in tensors.items()}
    for direction, layout in layouts.items():
        flat[f"layout.{direction}.frame_selection"] = layout.frame_selection.cpu().contiguous()
        flat[f"layout.{direction}.token_regions"] = layout.token_regions.cpu().contiguous()
    save_file(flat, str(partial / "tensors.safetensors"))
    keypoints.save(partial / "keypoints.npz")
    grid = next(iter(layouts.values())).grid_size if layouts else None
    meta = {"name": key, "prompt": prompt, "grid_size": grid, "directions": sorted(layouts)}
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
        raise CacheError(f"no cached windows in {cache_dir}; run the data_process task (config/data_process.yaml) first")
    return keys


def cached_pose_style(cache_dir: Path, keys: list[str]) -> str:
    """The pose style every listed window was drawn in; a CacheError when they were drawn in different
    styles or before the style was recorded (those have the old RGB drawing: rerun data_process)."""
    styles = set()
    for key in keys:
        origin = f"cached window {cache_dir / key}"
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
            f"{cache_dir} mixes windows drawn in pose styles {sorted(styles)}; rerun data_process into a fresh "
            "data.cache_dir"
        )
    (style,) = styles
    return style


def read_window(cache_dir: Path, key: str) -> ClipBatch:
    """A cached window as a batch of one; pose images become floats in [0, 1]."""
    folder = cache_dir / key
    if not (folder / "meta.json").is_file():
        raise CacheError(f"{folder} is not a complete cached window; rerun data_process")
    negative = cache_dir / NEGATIVE_CONTEXT_FILE
    if not negative.is_file():
        raise CacheError(f"{negative} is missing; rerun data_process")
    meta = json.loads((folder / "meta.json").read_text())
    tensors = read_tensors(folder / "tensors.safetensors", what="cached window")
    layouts = {
        direction: SparseLayout(
            frame_selection=tensors[f"layout.{direction}.frame_selection"],
            token_regions=tensors[f"layout.{direction}.token_regions"],
            grid_size=tuple(meta["grid_size"]),
        )
        for direction in meta["directions"]
    }
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
    )


class WindowOrder:
    """Which cached window every micro-batch reads: a fresh seeded permutation per epoch, a pure function
    of (seed, micro-batch index), so a resumed run reads exactly what the uninterrupted run would have.
    Each process of a multi-GPU run takes every world_size-th item of the permutation."""

    def __init__(self, keys: list[str], seed: int, rank: int = 0, world_size: int = 1) -> None:
        if len(keys) < world_size:
            raise CacheError(f"{len(keys)} cached windows cannot feed {world_size} processes")
        self.keys, self.seed, self.rank, self.world_size = keys, seed, rank, world_size
        self.per_epoch = len(keys) // world_size

    def key(self, micro_batch: int) -> str:
        epoch, position = divmod(micro_batch, self.per_epoch)
        permutation = torch.randperm(len(self.keys), generator=torch.Generator().manual_seed(self.seed + epoch))
        return self.keys[int(permutation[position * self.world_size + self.rank])]
