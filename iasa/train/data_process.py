"""The data_process task: cache VAE latents, CLIP and text embeddings, pose images and sparse layouts of
every training clip, so training never runs the VAE encoder, T5 or CLIP. Finished clips are skipped,
so an interrupted run resumes where it stopped. A video that cannot be read (a corrupt video, bad keypoints)
is reported and skipped, the others are cached, and the run ends with an error listing the skipped ones."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from tqdm import tqdm

from iasa.attention.build import build_sparse_layout
from iasa.attention.layout import SparseLayout
from iasa.config import validate_config
from iasa.errors import InputError
from iasa.pose.drawing import draw_pose_frames
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.style import resolve_pose_style
from iasa.train.cache import (
    NEGATIVE_CONTEXT_FILE,
    CacheError,
    cached_pose_style,
    is_cached,
    write_clip,
    write_negative_context,
)
from iasa.train.config import DataProcessConfig
from iasa.train.dataset import (
    CropTransform,
    DatasetError,
    ClipSpec,
    SkippedClipsError,
    clip_frame_indices,
    list_videos,
    load_video_keypoints,
    plan_clips,
    read_frames,
    read_prompt,
    select_keypoint_frames,
    video_frame_count,
)
from iasa.video.assembly import WanComponents
from iasa.video.conditioning import encode_clip_feature, encode_first_frame_condition, encode_prompt
from iasa.video.latent_grid import TOKEN_STRIDE


class ClipEncoder:
    """What data_process computes of a training clip: VAE latents, umt5 and CLIP embeddings, the I2V condition
    (frozen encoders), pose images and sparse layouts (the config's layout rule)."""

    def __init__(self, components: WanComponents, config: DataProcessConfig) -> None:
        self.components, self.rule = components, config.layout

    def _input(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.components.device, dtype=self.components.dtype)

    def video(self, frames: torch.Tensor) -> torch.Tensor:
        """(1, 3, F, H, W) in [-1, 1] -> latents (1, 16, T, H/8, W/8), T = (F - 1) / 4 + 1."""
        vae = self.components.vae
        return vae.encode([self._input(frames[0])], device=self.components.device).to(self.components.dtype)

    def prompt(self, prompt: str) -> torch.Tensor:
        """-> (1, L, D_text)."""
        return encode_prompt(self.components.tokenizer, self.components.text_encoder, prompt, self.components.device)

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [-1, 1] -> CLIP tokens (1, 257, D_clip)."""
        return encode_clip_feature(self.components.image_encoder, self._input(image[0]))

    def image_condition(self, image: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The I2V condition y (1, 20, T, H/8, W/8) of a reference frame (1, 3, H, W) in [-1, 1]."""
        return encode_first_frame_condition(self.components.vae, self._input(image[0]), num_frames)

    def pose(self, keypoints: WholeBodyKeypoints, height: int, width: int, style: str) -> torch.Tensor:
        """Pose images (F, 3, H, W) in [0, 1] that the pose guider reads, in ``style`` (iasa.pose.style)."""
        if tuple(keypoints.image_size) != (height, width):
            raise ValueError(f"keypoints are for {keypoints.image_size}, pose images asked at {(height, width)}")
        return rearrange(torch.from_numpy(draw_pose_frames(keypoints, style)), "f h w c -> f c h w").float() / 255

    def layout(self, keypoints: WholeBodyKeypoints, direction: str, grid_size: tuple[int, int]) -> SparseLayout:
        """The clip's sparse layout (latent-frame poses come from the video frames each latent covers)."""
        return build_sparse_layout(keypoints, self.rule.for_direction(direction), grid_size)


def process_dataset(config: DataProcessConfig, components: WanComponents, rank: int = 0, world_size: int = 1) -> int:
    """Cache every training clip not cached yet (this process's share of them); returns how many were written.
    components: the VAE, text and image encoders (iasa.train.model.load_training_components). Videos that
    cannot be read are skipped with a message; SkippedClipsError at the end lists them."""
    validate_config(config)  # load_config did already; here for configs built in code
    data = config.data
    # The fine-tune starts from UniAnimate's checkpoint, so "auto" is its style.
    pose_style = resolve_pose_style(data.pose_style, None, "UniAnimate's checkpoint", key="data.pose_style")
    dataset_dir, cache_dir = Path(data.dataset_dir), Path(data.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    grid = (data.height // TOKEN_STRIDE, data.width // TOKEN_STRIDE)
    encode = ClipEncoder(components, config)

    with torch.no_grad():
        if rank == 0 and not (cache_dir / NEGATIVE_CONTEXT_FILE).is_file():
            write_negative_context(cache_dir, encode.prompt(data.negative_prompt))

        videos = list_videos(dataset_dir)
        skipped: dict[str, str] = {}  # video name -> why
        plans = []
        for name in tqdm(videos, desc="scanning videos", disable=rank != 0):
            try:
                frame_count, size = video_frame_count(dataset_dir / "videos" / f"{name}.mp4")
            except InputError as error:
                skipped[name] = str(error)
                report(rank, f"skipping {name}: {error}")
                continue
            clips = plan_clips(frame_count, name, data)
            if not clips:
                report(rank, f"skipping {name}: {frame_count} frames, shorter than one training clip")
            plans.extend((clip, size) for clip in clips)
        done = [clip.key for clip, _ in plans if is_cached(cache_dir, clip.key)]
        if done and (found := cached_pose_style(cache_dir, done)) != pose_style:
            raise CacheError(
                f"{cache_dir} holds clips drawn in pose style {found!r}, data.pose_style asks {pose_style!r}: "
                "set data.cache_dir to a fresh folder"
            )
        pending = [(clip, size) for clip, size in plans[rank::world_size] if not is_cached(cache_dir, clip.key)]

        written = 0
        prompts: dict[str, torch.Tensor] = {}
        for clip, size in tqdm(pending, desc="caching clips", disable=rank != 0):
            if clip.name in skipped:
                continue
            try:
                encoded = encode_clip(config, encode, clip, size, grid, prompts, pose_style)
            except InputError as error:  # this video's keypoints or frames: the other videos go on
                skipped[clip.name] = str(error)
                tqdm.write(f"skipping {clip.name}: {error}")
                continue
            tensors, layouts, clip_keypoints, prompt = encoded
            write_clip(cache_dir, clip.key, tensors, layouts, clip_keypoints, prompt, config.layout, pose_style)
            written += 1
    if skipped:
        listed = "; ".join(f"{name} ({reason})" for name, reason in sorted(skipped.items()))
        raise SkippedClipsError(
            f"data_process cached {written} clips and skipped {len(skipped)} of {len(videos)} videos, whose clips "
            f"are not cached: {listed}"
        )
    return written


def report(rank: int, message: str) -> None:
    """A note from the scan, which every process runs: printed once."""
    if rank == 0:
        tqdm.write(message)


def encode_clip(
    config: DataProcessConfig,
    encode: ClipEncoder,
    clip: ClipSpec,
    size: tuple[int, int],
    grid: tuple[int, int],
    prompts: dict[str, torch.Tensor],
    pose_style: str,
) -> tuple[dict[str, torch.Tensor], dict[str, SparseLayout], WholeBodyKeypoints, str]:
    """The tensors, layouts, keypoints and prompt of one training clip, pose images drawn in `pose_style`;
    prompts caches text embeddings by prompt."""
    data = config.data
    dataset_dir = Path(data.dataset_dir)
    video_path = dataset_dir / "videos" / f"{clip.name}.mp4"
    indices = clip_frame_indices(clip, data)
    keypoints = load_video_keypoints(dataset_dir, clip.name, size)
    if keypoints.num_frames <= indices[-1]:
        raise DatasetError(
            f"keypoints of '{clip.name}' cover {keypoints.num_frames} frames, the video has more; "
            "extract keypoints for every video frame"
        )
    crop = CropTransform.centre(size, data.height, data.width)
    frames = crop.frames(read_frames(video_path, indices))
    clip_keypoints = crop.keypoints(select_keypoint_frames(keypoints, indices))

    video = rearrange(torch.from_numpy(frames), "f h w c -> 1 c f h w").float() / 127.5 - 1
    reference = video[:, :, 0]
    prompt = read_prompt(dataset_dir, clip.name, data.default_prompt)
    if prompt not in prompts:
        prompts[prompt] = encode.prompt(prompt)[0]
    pose = encode.pose(clip_keypoints, data.height, data.width, pose_style)
    pose_uint8 = rearrange((pose * 255).round().clamp(0, 255).to(torch.uint8), "f c h w -> c f h w")
    tensors = {
        "latents": encode.video(video)[0],
        "y": encode.image_condition(reference, data.num_frames)[0],
        "clip_feature": encode.image(reference)[0],
        "context": prompts[prompt],
        "pose_video": pose_uint8,
        "reference_pose": pose_uint8[:, 0],
    }
    layouts = {direction: encode.layout(clip_keypoints, direction, grid) for direction in config.layout_directions}
    return tensors, layouts, clip_keypoints, prompt
