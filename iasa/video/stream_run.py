"""Speech + reference image -> a video streamed as it is generated: the end-to-end path of scripts/stream.py.

The inputs are prepared as for scripts/generate.py (iasa.video.inference: reference pose, audio -> motion ->
keypoints), then the 1-step student generates chunk by chunk (iasa.video.streaming), each chunk is decoded at
once (iasa.video.stream_decode) and its frames go to the mp4 writer (finalised with the speech at the end) and,
with --serve, to the loopback preview page. Latency is measured from the first chunk's inputs being ready to its
first decoded frame (iasa.video.stream_clock); the README states the latency of the stages before (motion).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from iasa.config import ConfigError, ConfigValueError, check, validate_config
from iasa.video.config import (
    PROMPT,
    InferenceSpeedConfig,
    LongVideoConfig,
    SamplerConfig,
    StreamingConfig,
)
from iasa.video.inference import GenerationInputs
from iasa.video.latent_grid import TEMPORAL_STRIDE, TOKEN_STRIDE, VAE_STRIDE, padded_frame_count
from iasa.video.preview_server import PreviewServer

if TYPE_CHECKING:
    from iasa.pose.keypoints import WholeBodyKeypoints
    from iasa.video.pipeline import VideoGenerator
from iasa.video.stream_clock import StreamClock

# --serve: how long past the video's own length the page may take to show the last frames before it closes.
SHOW_MARGIN_SECONDS = 5.0


@dataclass
class StreamSamplerConfig:
    """The student's one step (no classifier-free guidance: one DiT pass per chunk)."""

    # Flow-matching timestep shift of the one step.
    shift: float = SamplerConfig.shift
    # Noise seed (latent frame t's noise is seeded by (seed, t)).
    seed: int = SamplerConfig.seed
    prompt: str = PROMPT

    def validate(self) -> None:
        check(self.shift > 0, "shift", self.shift, "must be > 0")


@dataclass
class StreamSpeedConfig:
    """InferenceSpeedConfig's choices that apply to streaming (the decoder steps one chunk at a time)."""

    dit_precision: str = InferenceSpeedConfig.dit_precision
    decoder: str = InferenceSpeedConfig.decoder
    tae_checkpoint: Optional[str] = InferenceSpeedConfig.tae_checkpoint
    vae_memory_format: str = InferenceSpeedConfig.vae_memory_format

    def validate(self) -> None:
        self.for_generator().validate()

    def for_generator(self) -> InferenceSpeedConfig:
        return InferenceSpeedConfig(**{f.name: getattr(self, f.name) for f in fields(StreamSpeedConfig)})


@dataclass
class StreamInferenceConfig(GenerationInputs):
    """scripts/stream.py's config (config/stream_iasa.yaml): generate's inputs (iasa.video.inference.GenerationInputs)
    and what streaming adds."""

    # Marks a stream config among config/*.yaml.
    task: str = "stream"
    out: str = "outputs/stream.mp4"
    sampler: StreamSamplerConfig = field(default_factory=StreamSamplerConfig)
    speed: StreamSpeedConfig = field(default_factory=StreamSpeedConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    # --serve: the preview page's port on 127.0.0.1 (0 = any free port; the URL is printed).
    preview_port: int = 8000

    def validate(self) -> None:
        check(self.task == "stream", "task", self.task, "must be stream (this is scripts/stream.py's config)")
        super().validate()
        check(0 <= self.preview_port < 65536, "preview_port", self.preview_port, "must be a port number (0 = any)")


@dataclass
class StreamReport:
    """What a stream measured: first-frame latency and sustained fps (None when undefined), frames, video fps."""

    first_frame_latency_s: Optional[float]
    sustained_fps: Optional[float]
    frames: int
    video_fps: float
    summary: str


def run_stream(
    config: StreamInferenceConfig,
    serve: bool = False,
    progress: bool = True,
    on_url: Callable[[str], None] = lambda url: print(f"preview: {url}", flush=True),
    hold: Callable[[PreviewServer], None] | None = None,
) -> StreamReport:
    """Write config.out while streaming (and serve the preview with `serve`); returns the measurements.

    With `serve`: on_url(url) is called once the page is up, before generation starts; hold(server), after the
    last frame, keeps the page up until it returns (default: until every frame has been shown at the video's
    pace)."""
    from iasa.attention.frame_selection import DIRECTIONS
    from iasa.motion.audio import load_audio
    from iasa.pose import draw_pose_frames, motion_to_keypoints
    from iasa.video.inference import check_model_files, check_output_path, inference_pose_style, reference_image_and_pose
    from iasa.video.pipeline import VideoGenerator, pad_keypoints
    from iasa.video.video_io import StreamingVideoWriter

    validate_config(config)
    if not config.audio or not config.image:
        raise ConfigError("pass audio=<speech file> and image=<reference image> (and out=<video.mp4>)")
    sparse = config.attention.attention == "iasa"
    if sparse and config.attention.sparse.direction != "past":
        raise ConfigValueError(
            "attention.sparse.direction", config.attention.sparse.direction,
            f"must be past to stream (the causal student; {DIRECTIONS[1]} reads future frames)",
        )  # fmt: skip
    size = (config.pose.image_height, config.pose.image_width)
    check_output_path(config.out)
    waveform = load_audio(config.audio)
    check_model_files(config)
    pose_style = inference_pose_style(config.pose.style, config.model)
    image, reference = reference_image_and_pose(config, size)
    generator = VideoGenerator.from_config(config.model, config.attention, LongVideoConfig(), config.speed.for_generator())
    c = generator.components

    # Motion for the whole speech first (EMAGE needs 64-frame windows; README: streaming input).
    if config.emage_dir is not None:
        from iasa.motion.emage_inference import EmageMotionGenerator

        motion = EmageMotionGenerator.from_pretrained(config.emage_dir, device=c.device)(waveform)
    else:
        from iasa.motion.procedural import ProceduralMotionGenerator

        motion = ProceduralMotionGenerator()(waveform)
    keypoints = motion_to_keypoints(motion, config.pose, reference=reference)
    num_frames = keypoints.num_frames
    keypoints = pad_keypoints(keypoints, padded_frame_count(num_frames))
    reference_pose = draw_pose_frames(
        reference.slice_frames(0, 1) if reference is not None else keypoints.slice_frames(0, 1), pose_style
    )[0]
    fps = motion.fps
    server = PreviewServer(port=config.preview_port, audio_path=config.audio, fps=fps) if serve else None
    clock = StreamClock()
    written = 0
    with StreamingVideoWriter(config.out, fps, size, audio=config.audio) as writer:
        if server is not None:
            server.start()
            on_url(server.url)
        try:
            chunks = stream_frames(generator, config, image, reference_pose, keypoints, pose_style, num_frames, progress)
            clock.mark_inputs_ready()
            for video in chunks:
                writer.append(video)
                if server is not None:
                    server.publish(video)
                written += len(video)
                clock.mark_frames(len(video))
        finally:
            if server is not None:
                server.finish()
        if server is not None:
            try:
                if hold is None:
                    _until_shown(server, fps)
                else:
                    hold(server)
            finally:
                server.stop()
    return StreamReport(clock.first_frame_latency, clock.sustained_fps, written, fps, clock.summary(fps))


def _until_shown(server: PreviewServer, video_fps: float) -> None:
    """Wait until the page has been sent every frame at the video's pace (bounded by that time + a margin)."""
    deadline = time.monotonic() + server.status()["frames"] / video_fps + SHOW_MARGIN_SECONDS
    while not server.status()["done"] and time.monotonic() < deadline:
        time.sleep(0.05)


def stream_frames(
    generator: "VideoGenerator",
    config: StreamInferenceConfig,
    image: np.ndarray,
    reference_pose: np.ndarray,
    keypoints: "WholeBodyKeypoints",
    pose_style: str,
    num_frames: int,
    progress: bool = True,
) -> Iterator[np.ndarray]:
    """The stream's frames, (f, H, W, 3) uint8 per chunk as soon as it is decoded (the clip's conditions are
    encoded before this returns; the iterator runs the chunks): image (H, W, 3) uint8 the
    reference, reference_pose (H, W, 3) uint8 its pose image, keypoints of a 4n + 1-frame clip (padded by
    repeating the last frame) of which the first num_frames are the video's; uses config.attention, sampler,
    speed.vae_memory_format and streaming."""
    from iasa.video.conditioning import encode_clip_feature, encode_first_frame_condition, encode_prompt, image_to_tensor
    from iasa.video.streaming import StreamConditions, latent_frame_poses

    c = generator.components
    streaming = config.streaming
    size = image.shape[:2]
    poses = latent_frame_poses(keypoints, config.attention.sparse, (size[0] // TOKEN_STRIDE, size[1] // TOKEN_STRIDE))
    with torch.no_grad():
        context = encode_prompt(c.tokenizer, c.text_encoder, config.sampler.prompt, c.device)
        reference_tensor = image_to_tensor(image, c.device, c.dtype)
        clip_feature = encode_clip_feature(c.image_encoder, reference_tensor).to(c.dtype)
        # The reference condition of the trained length; a frame reads it at its RoPE position.
        y = encode_first_frame_condition(c.vae, reference_tensor, TEMPORAL_STRIDE * (streaming.trained_latent_frames - 1) + 1)
        reference_pose_tensor = rearrange(
            torch.from_numpy(np.ascontiguousarray(reference_pose)).to(c.device, c.dtype) / 255.0, "h w c -> 1 c h w"
        )
        y = y + c.pose_guider.reference_condition(reference_pose_tensor)
    return _chunks(
        generator, config, keypoints, poses, pose_style, num_frames, StreamConditions(context, clip_feature, y),
        progress,
    )  # fmt: skip


def _chunks(generator, config, keypoints, poses, pose_style, num_frames, conditions, progress) -> Iterator[np.ndarray]:
    """stream_frames' iterator."""
    from iasa.pose import draw_pose_frames
    from iasa.video.sampler import flow_matching_schedule
    from iasa.video.stream_decode import StreamDecoder
    from iasa.video.streaming import PoseFeatureStream, StreamState, frame_noise, generate_chunk, stream_slot_tokens

    c, streaming = generator.components, config.streaming
    timesteps, sigmas = flow_matching_schedule(1, config.sampler.shift)
    timestep, sigma = timesteps[:1].to(device=c.device, dtype=c.dtype), float(sigmas[0])
    decoder = StreamDecoder(generator.tae if generator.tae is not None else c.vae, config.speed.vae_memory_format)
    rule = config.attention.sparse if config.attention.attention == "iasa" else None
    height, width = keypoints.image_size
    latent_grid = (height // VAE_STRIDE, width // VAE_STRIDE)
    features = PoseFeatureStream(c.pose_guider)
    # The cache's slots hold the largest frame of the stream: allocated once, never grown.
    state, drawn, written = StreamState(slot_tokens=stream_slot_tokens(poses, rule)), 0, 0
    bar = tqdm(total=len(poses), desc="streaming", unit="latent frame", disable=not progress)
    for first in range(0, len(poses), streaming.chunk_latent_frames):
        stop = min(first + streaming.chunk_latent_frames, len(poses))
        # The chunk waits for the pose frames its features read (one latent frame of look-ahead).
        while features.ready_latent_frames() < stop:
            upto = min(keypoints.num_frames, drawn + TEMPORAL_STRIDE)
            frames = draw_pose_frames(keypoints.slice_frames(drawn, upto), pose_style)
            features.push(rearrange(torch.from_numpy(frames).to(c.device, c.dtype) / 255.0, "f h w c -> f c h w"))
            drawn = upto
            if drawn == keypoints.num_frames:
                features.finish()
        with torch.no_grad():
            noise = torch.cat([frame_noise(config.sampler.seed, t, latent_grid, c.device, c.dtype) for t in range(first, stop)], 2)
            latents, state = generate_chunk(
                c.dit, state, noise, timestep, sigma, conditions, features.features(first, stop), poses[first:stop],
                streaming, rule, config.attention.backend,
            )  # fmt: skip
            video = decoder.decode(latents)[: max(0, num_frames - written)]
        written += len(video)
        bar.update(stop - first)
        yield video
    bar.close()
