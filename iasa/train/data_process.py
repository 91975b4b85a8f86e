"""The data_process task: cache VAE latents, CLIP and text embeddings, pose images and sparse layouts of
every training window, so training never runs the VAE encoder, T5 or CLIP. Finished windows are skipped,
so an interrupted run resumes where it stopped. A clip that cannot be read (a corrupt video, bad keypoints)
is reported and skipped, the others are cached, and the run ends with an error listing the skipped ones."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from tqdm import tqdm

from iasa.pose.style import resolve_pose_style
from iasa.config import validate_config
from iasa.errors import InputError
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.train.backbone import VideoBackbone
from iasa.train.cache import (
    NEGATIVE_CONTEXT_FILE,
    CacheError,
    cached_pose_style,
    is_cached,
    write_negative_context,
    write_window,
)
from iasa.train.config import DataProcessConfig
from iasa.train.dataset import (
    CropTransform,
    DatasetError,
    SkippedClipsError,
    WindowSpec,
    list_clips,
    load_clip_keypoints,
    plan_windows,
    read_frames,
    read_prompt,
    select_keypoint_frames,
    video_frame_count,
    window_indices,
)

VAE_STRIDE = 8
PATCH = 2


def process_dataset(config: DataProcessConfig, backbone: VideoBackbone, rank: int = 0, world_size: int = 1) -> int:
    """Cache every window not cached yet (this process's share of them); returns how many were written.
    Clips that cannot be read are skipped with a message; SkippedClipsError at the end lists them."""
    validate_config(config)  # load_config did already; here for configs built in code
    data = config.data
    # The fine-tune starts from UniAnimate's checkpoint, so "auto" is its style.
    pose_style = resolve_pose_style(data.pose_style, None, "UniAnimate's checkpoint", key="data.pose_style")
    dataset_dir, cache_dir = Path(data.dataset_dir), Path(data.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    grid = (data.height // (VAE_STRIDE * PATCH), data.width // (VAE_STRIDE * PATCH))

    with torch.no_grad():
        if rank == 0 and not (cache_dir / NEGATIVE_CONTEXT_FILE).is_file():
            write_negative_context(cache_dir, backbone.encode_prompt(data.negative_prompt))

        clips = list_clips(dataset_dir)
        skipped: dict[str, str] = {}  # clip name -> why
        plans = []
        for name in tqdm(clips, desc="scanning videos", disable=rank != 0):
            try:
                frame_count, size = video_frame_count(dataset_dir / "videos" / f"{name}.mp4")
            except InputError as error:
                skipped[name] = str(error)
                report(rank, f"skipping {name}: {error}")
                continue
            windows = plan_windows(frame_count, name, data)
            if not windows:
                report(rank, f"skipping {name}: {frame_count} frames, shorter than one window")
            plans.extend((window, size) for window in windows)
        done = [window.key for window, _ in plans if is_cached(cache_dir, window.key)]
        if done and (found := cached_pose_style(cache_dir, done)) != pose_style:
            raise CacheError(
                f"{cache_dir} holds windows drawn in pose style {found!r}, data.pose_style asks {pose_style!r}: "
                "set data.cache_dir to a fresh folder"
            )
        pending = [(window, size) for window, size in plans[rank::world_size] if not is_cached(cache_dir, window.key)]

        written = 0
        prompts: dict[str, torch.Tensor] = {}
        for window, size in tqdm(pending, desc="caching windows", disable=rank != 0):
            if window.name in skipped:
                continue
            try:
                tensors, layouts, window_keypoints, prompt = cache_window(config, backbone, window, size, grid, prompts, pose_style)
            except InputError as error:  # this clip's keypoints or frames: the other clips go on
                skipped[window.name] = str(error)
                tqdm.write(f"skipping {window.name}: {error}")
                continue
            write_window(cache_dir, window.key, tensors, layouts, window_keypoints, prompt, pose_style)
            written += 1
    if skipped:
        listed = "; ".join(f"{name} ({reason})" for name, reason in sorted(skipped.items()))
        raise SkippedClipsError(
            f"data_process cached {written} windows and skipped {len(skipped)} of {len(clips)} videos, whose windows "
            f"are not cached: {listed}"
        )
    return written


def report(rank: int, message: str) -> None:
    """A note from the scan, which every process runs: printed once."""
    if rank == 0:
        tqdm.write(message)


def cache_window(
    config: DataProcessConfig,
    backbone: VideoBackbone,
    window: WindowSpec,
    size: tuple[int, int],
    grid: tuple[int, int],
    prompts: dict[str, torch.Tensor],
    pose_style: str,
) -> tuple[dict[str, torch.Tensor], dict, WholeBodyKeypoints, str]:
    """The tensors, layouts, keypoints and prompt of one window, pose images drawn in `pose_style`; prompts
    caches text embeddings by prompt."""
    data = config.data
    dataset_dir = Path(data.dataset_dir)
    video_path = dataset_dir / "videos" / f"{window.name}.mp4"
    indices = window_indices(window, data)
    keypoints = load_clip_keypoints(dataset_dir, window.name, size)
    if keypoints.num_frames <= indices[-1]:
        raise DatasetError(
            f"keypoints of '{window.name}' cover {keypoints.num_frames} frames, the video has more; "
            "extract keypoints for every video frame"
        )
    crop = CropTransform.centre(size, data.height, data.width)
    frames = crop.frames(read_frames(video_path, indices))
    window_keypoints = crop.keypoints(select_keypoint_frames(keypoints, indices))

    video = rearrange(torch.from_numpy(frames), "f h w c -> 1 c f h w").float() / 127.5 - 1
    reference = video[:, :, 0]
    prompt = read_prompt(dataset_dir, window.name, data.default_prompt)
    if prompt not in prompts:
        prompts[prompt] = backbone.encode_prompt(prompt)[0]
    pose = backbone.render_pose(window_keypoints, data.height, data.width, pose_style)
    pose_uint8 = rearrange((pose * 255).round().clamp(0, 255).to(torch.uint8), "f c h w -> c f h w")
    tensors = {
        "latents": backbone.encode_video(video)[0],
        "y": backbone.image_condition(reference, data.num_frames)[0],
        "clip_feature": backbone.encode_image(reference)[0],
        "context": prompts[prompt],
        "pose_video": pose_uint8,
        "reference_pose": pose_uint8[:, 0],
    }
    layouts = {direction: backbone.build_layout(window_keypoints, direction, grid) for direction in config.layout_directions}
    return tensors, layouts, window_keypoints, prompt
