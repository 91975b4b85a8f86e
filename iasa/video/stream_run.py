"""Speech + reference image -> a video streamed as it is generated: the end-to-end path of scripts/stream.py.

The inputs are prepared as for scripts/generate.py (iasa.video.inference: reference pose, audio -> motion ->
keypoints). With `live_motion` the motion is the live procedural motion, fed the speech a chunk's duration at a
time as if it arrived so (iasa.video.stream_input): keypoints and pose images are made for the frames that are
final, and each chunk runs as soon as its frames and the pose guider's look-ahead are (a frame waits for 9 frames
of speech past its own, then the chunk for 4 video frames past its last). Otherwise the motion of the whole
speech comes first (EMAGE, whose windows need it, or the offline procedural motion). The 1-step student
generates chunk by chunk (iasa.video.streaming), each chunk is decoded at once (iasa.video.stream_decode) and its
frames go to the mp4 writer (finalised with the speech at the end) and, with --serve, to the loopback preview
page. Latency is measured from the clip's conditions being encoded to the first decoded frame
(iasa.video.stream_clock): with live_motion it includes computing the first chunk's motion, keypoints and pose
images, not the speech's arrival (the README adds that up, stage by stage).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional

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
    from iasa.video.streaming import StreamConditions
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
    # The chunks of the stream's fixed shape run one compiled DiT block function (iasa.video.streaming.generate_chunk),
    # compiled by a throwaway warm-up stream before the first real chunk (stream_frames).
    compile_dit: bool = InferenceSpeedConfig.compile_dit

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
    # The procedural motion made as the speech arrives (iasa.motion.procedural.LiveProceduralMotion: a frame waits
    # for 9 frames of speech past its own), fed a chunk's duration of speech at a time; false = the motion of the
    # whole speech first (EMAGE, or with emage_dir null the offline procedural motion). Needs emage_dir null.
    live_motion: bool = True

    def validate(self) -> None:
        check(self.task == "stream", "task", self.task, "must be stream (this is scripts/stream.py's config)")
        super().validate()
        check(0 <= self.preview_port < 65536, "preview_port", self.preview_port, "must be a port number (0 = any)")
        check(not (self.live_motion and self.emage_dir is not None), "live_motion", self.live_motion,
              "must be false with emage_dir set (EMAGE makes the motion of the whole speech first)")  # fmt: skip


@dataclass
class StreamReport:
    """What a stream measured: first-frame latency and sustained fps (None when undefined), frames, video fps, and
    the warm-up's seconds (None: no warm-up; the latency is measured after it)."""

    first_frame_latency_s: Optional[float]
    sustained_fps: Optional[float]
    frames: int
    video_fps: float
    summary: str
    warmup_s: Optional[float] = None


def run_stream(
    config: StreamInferenceConfig,
    serve: bool = False,
    progress: bool = True,
    on_url: Callable[[str], None] = lambda url: print(f"preview: {url}", flush=True),
    hold: Callable[[PreviewServer], None] | None = None,
    on_warmup: Callable[[float], None] = lambda seconds: print(
        f"warm-up (compiling the DiT blocks) took {seconds:.1f} s; latency is measured after it", flush=True
    ),
) -> StreamReport:
    """Write config.out while streaming (and serve the preview with `serve`); returns the measurements.

    With speed.compile_dit, on_warmup(seconds) is called after the warm-up stream (stream_frames), which runs
    before the clock starts and before the page is up. With `serve`: on_url(url) is called once the page is up,
    before generation starts; hold(server), after the last frame, keeps the page up until it returns (default:
    until every frame has been shown at the video's pace)."""
    from iasa.attention.frame_selection import DIRECTIONS
    from iasa.motion.audio import load_audio
    from iasa.pose import draw_pose_frames, motion_to_keypoints
    from iasa.video.inference import check_model_files, check_output_path, inference_pose_style, reference_image_and_pose
    from iasa.video.pipeline import VideoGenerator
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

    reference_pose = draw_pose_frames(reference.slice_frames(0, 1), pose_style)[0] if reference is not None else None
    warmup: list[float] = []

    def warmed_up(seconds: float) -> None:
        warmup.append(seconds)
        on_warmup(seconds)

    if config.live_motion:
        from iasa.motion.procedural import LiveProceduralMotion
        from iasa.video.stream_input import live_keypoints, speech_piece_samples

        live = LiveProceduralMotion()
        fps = live.config.fps
        piece = speech_piece_samples(config.streaming.chunk_latent_frames, fps)
        chunks = stream_frames(
            generator, config, image, reference_pose, live_keypoints(waveform, live, piece, config.pose, reference),
            pose_style, progress, reference=reference, on_warmup=warmed_up,
        )  # fmt: skip
    else:
        # The motion of the whole speech first (EMAGE needs 64-frame windows; README: streaming input).
        if config.emage_dir is not None:
            from iasa.motion.emage_inference import EmageMotionGenerator

            motion = EmageMotionGenerator.from_pretrained(config.emage_dir, device=c.device)(waveform)
        else:
            from iasa.motion.procedural import ProceduralMotionGenerator

            motion = ProceduralMotionGenerator()(waveform)
        fps = motion.fps
        keypoints = motion_to_keypoints(motion, config.pose, reference=reference)
        chunks = stream_clip_frames(
            generator, config, image, reference_pose, keypoints, pose_style, progress, reference, warmed_up
        )  # fmt: skip
    server = PreviewServer(port=config.preview_port, audio_path=config.audio, fps=fps) if serve else None
    clock = StreamClock()
    written = 0
    with StreamingVideoWriter(config.out, fps, size, audio=config.audio) as writer:
        if server is not None:
            server.start()
            on_url(server.url)
        try:
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
    return StreamReport(
        clock.first_frame_latency, clock.sustained_fps, written, fps, clock.summary(fps), warmup[0] if warmup else None
    )  # fmt: skip


def _until_shown(server: PreviewServer, video_fps: float) -> None:
    """Wait until the page has been sent every frame at the video's pace (bounded by that time + a margin)."""
    deadline = time.monotonic() + server.status()["frames"] / video_fps + SHOW_MARGIN_SECONDS
    while not server.status()["done"] and time.monotonic() < deadline:
        time.sleep(0.05)


def stream_frames(
    generator: "VideoGenerator",
    config: StreamInferenceConfig,
    image: np.ndarray,
    reference_pose: np.ndarray | None,
    pieces: Iterable["WholeBodyKeypoints"],
    pose_style: str,
    progress: bool = True,
    slot_tokens: int | None = None,
    reference: "WholeBodyKeypoints | None" = None,
    on_warmup: Callable[[float], None] | None = None,
) -> Iterator[np.ndarray]:
    """The stream's frames, (f, H, W, 3) uint8 per chunk as soon as it is decoded (the reference's conditions
    are encoded before this returns; the iterator runs the chunks): image (H, W, 3) uint8 the reference,
    reference_pose (H, W, 3) uint8 its pose image (None: the pose image of the stream's first frame), pieces the
    keypoints of the video's frames in order as they become final (pulled when the next chunk needs them; the
    end is padded to 4n + 1 frames by repeating the last); slot_tokens: the most tokens a cached frame holds
    (stream_slot_tokens, when the frames are known in advance), None: the first chunk's largest, the cache
    growing (one copy) when a later frame holds more. Uses config.attention, sampler, speed.vae_memory_format,
    speed.compile_dit and streaming.

    With speed.compile_dit the chunks of the stream's fixed shape run compiled (generate_chunk), and a throwaway
    warm-up stream compiles them before this returns (warm_up_stream: reference, the reference's keypoints,
    is its pose; on_warmup(seconds) follows it), so no real chunk waits for the compiler. The slots then hold a
    whole frame when slot_tokens is None: a cache that grows would be a new shape, compiled mid-stream."""
    from iasa.video.conditioning import encode_clip_feature, encode_first_frame_condition, encode_prompt, image_to_tensor

    c = generator.components
    with torch.no_grad():
        context = encode_prompt(c.tokenizer, c.text_encoder, config.sampler.prompt, c.device)
        reference_tensor = image_to_tensor(image, c.device, c.dtype)
        clip_feature = encode_clip_feature(c.image_encoder, reference_tensor).to(c.dtype)
        # The reference condition of the trained length; a frame reads it at its RoPE position.
        trained_frames = TEMPORAL_STRIDE * (config.streaming.trained_latent_frames - 1) + 1
        y = encode_first_frame_condition(c.vae, reference_tensor, trained_frames)
    encoded = (context, clip_feature, y)
    if config.speed.compile_dit:
        if slot_tokens is None:
            slot_tokens = (image.shape[0] // TOKEN_STRIDE) * (image.shape[1] // TOKEN_STRIDE)
        started = time.perf_counter()
        warm_up_stream(generator, config, image.shape[:2], encoded, reference_pose, reference, pose_style, slot_tokens, progress)
        if on_warmup is not None:
            on_warmup(time.perf_counter() - started)
    return _chunks(generator, config, pieces, pose_style, image.shape[:2], encoded, reference_pose, slot_tokens, progress)


def warmup_latent_frames(streaming: StreamingConfig, sparse: bool) -> int:
    """Latent frames of the warm-up stream: up to and including the first chunk that runs compiled
    (generate_chunk). Sparse: the first whole chunk, whose shape every later whole chunk shares. Dense: the
    chunks that fill frame 0 + cache_frames slots (eager: each has more keys), then one whole chunk at the
    full-slot shape, so that a long dense stream does not wait for the compiler when its slots fill either."""
    chunk = streaming.chunk_latent_frames
    if sparse:
        return chunk
    return -(-(streaming.cache_frames + 1) // chunk) * chunk + chunk


def warm_up_stream(
    generator: "VideoGenerator",
    config: StreamInferenceConfig,
    size: tuple[int, int],
    encoded,
    reference_pose: np.ndarray | None,
    reference: "WholeBodyKeypoints | None",
    pose_style: str,
    slot_tokens: int,
    progress: bool = True,
) -> None:
    """Stream warmup_latent_frames throwaway latent frames and discard them: the compiled block function (and the
    flex kernel) compile for the stream's chunk shape of `size` (H, W) and slot_tokens, on a state of their own,
    so the real stream's state and output are untouched. Their pose: the reference's keypoints repeated, else
    (None) the rest pose of the procedural motion of silence; their noise the stream's seeded frames. A pose
    holding more cached tokens than slot_tokens (a clip's slots fit the clip's frames) grows the warm-up's cache
    only when its last chunk is stored, after every compiled chunk ran at the stream's slot size."""
    from iasa.video.pipeline import pad_keypoints
    from iasa.video.stream_input import clip_pieces

    if reference is None:
        reference = rest_pose_keypoints(config)
    frames = warmup_latent_frames(config.streaming, config.attention.attention == "iasa")
    keypoints = pad_keypoints(reference.slice_frames(0, 1), TEMPORAL_STRIDE * (frames - 1) + 1)
    pieces = clip_pieces(keypoints, TEMPORAL_STRIDE * config.streaming.chunk_latent_frames)
    for _ in _chunks(
        generator, config, pieces, pose_style, size, encoded, reference_pose, slot_tokens, progress, "warm-up"
    ):  # fmt: skip
        pass


def rest_pose_keypoints(config: StreamInferenceConfig) -> "WholeBodyKeypoints":
    """One frame of keypoints: the procedural motion of a silent moment, in the default framing of config.pose."""
    from iasa.motion.procedural import SAMPLE_RATE, ProceduralMotionGenerator
    from iasa.pose import motion_to_keypoints

    motion = ProceduralMotionGenerator()(np.zeros(SAMPLE_RATE // 10, np.float32))
    return motion_to_keypoints(motion.slice_frames(0, 1), config.pose)


def stream_clip_frames(
    generator: "VideoGenerator",
    config: StreamInferenceConfig,
    image: np.ndarray,
    reference_pose: np.ndarray | None,
    keypoints: "WholeBodyKeypoints",
    pose_style: str,
    progress: bool = True,
    reference: "WholeBodyKeypoints | None" = None,
    on_warmup: Callable[[float], None] | None = None,
) -> Iterator[np.ndarray]:
    """stream_frames of a clip whose keypoints are all known: fed a chunk's frames at a time, the cache's slots
    sized for the clip's largest frame (allocated once, never grown)."""
    from iasa.video.pipeline import pad_keypoints
    from iasa.video.stream_input import clip_pieces
    from iasa.video.streaming import latent_frame_poses, stream_slot_tokens

    height, width = keypoints.image_size
    padded = pad_keypoints(keypoints, padded_frame_count(keypoints.num_frames))
    poses = latent_frame_poses(padded, config.attention.sparse, (height // TOKEN_STRIDE, width // TOKEN_STRIDE))
    slot_tokens = stream_slot_tokens(poses, config.attention.sparse if config.attention.attention == "iasa" else None)
    pieces = clip_pieces(keypoints, TEMPORAL_STRIDE * config.streaming.chunk_latent_frames)
    return stream_frames(
        generator, config, image, reference_pose, pieces, pose_style, progress, slot_tokens, reference, on_warmup
    )  # fmt: skip


def _chunks(
    generator, config, pieces, pose_style, size, encoded, reference_pose, slot_tokens, progress, desc="streaming"
) -> Iterator[np.ndarray]:
    """stream_frames' iterator (and the warm-up's)."""
    from iasa.pose import draw_pose_frames
    from iasa.video.sampler import flow_matching_schedule
    from iasa.video.stream_decode import StreamDecoder
    from iasa.video.stream_input import StreamInputs
    from iasa.video.streaming import PoseFeatureStream, StreamState, frame_noise, generate_chunk

    c, streaming = generator.components, config.streaming
    timesteps, sigmas = flow_matching_schedule(1, config.sampler.shift)
    timestep, sigma = timesteps[:1].to(device=c.device, dtype=c.dtype), float(sigmas[0])
    decoder = StreamDecoder(generator.tae if generator.tae is not None else c.vae, config.speed.vae_memory_format)
    rule = config.attention.sparse if config.attention.attention == "iasa" else None
    height, width = size
    latent_grid = (height // VAE_STRIDE, width // VAE_STRIDE)

    def pose_images(keypoints: "WholeBodyKeypoints") -> torch.Tensor:
        """(f, 3, H, W) in [0, 1] on the model's device."""
        frames = torch.from_numpy(np.ascontiguousarray(draw_pose_frames(keypoints, pose_style)))
        return rearrange(frames.to(c.device, c.dtype) / 255.0, "f h w c -> f c h w")

    features = PoseFeatureStream(c.pose_guider)
    token_grid = (height // TOKEN_STRIDE, width // TOKEN_STRIDE)
    inputs = StreamInputs(pieces, features, pose_images, config.attention.sparse, token_grid)
    state, conditions, first, written = StreamState(slot_tokens=slot_tokens), None, 0, 0
    bar = tqdm(desc=desc, unit="latent frame", disable=not progress)
    while True:
        # The chunk waits for the pose frames its features read (one latent frame of look-ahead) or the end.
        while True:
            stop = first + streaming.chunk_latent_frames
            if inputs.finished:
                stop = min(stop, inputs.latent_frames)
            if features.ready_latent_frames() >= stop:
                break
            inputs.pull()
        if stop <= first:
            break
        if conditions is None:
            pose = reference_pose if reference_pose is not None else draw_pose_frames(inputs.first_frame, pose_style)[0]
            conditions = _reference_conditions(generator, encoded, pose)
        with torch.no_grad():
            noise = torch.cat([frame_noise(config.sampler.seed, t, latent_grid, c.device, c.dtype) for t in range(first, stop)], 2)
            latents, state = generate_chunk(
                c.dit, state, noise, timestep, sigma, conditions, features.features(first, stop), inputs.poses(first, stop),
                streaming, rule, config.attention.backend, compiled=config.speed.compile_dit,
            )  # fmt: skip
            video = decoder.decode(latents)
        if inputs.finished:  # the padding of the last latent frame is no video frame
            video = video[: max(0, inputs.num_frames - written)]
        written += len(video)
        bar.update(stop - first)
        first = stop
        yield video
    bar.close()


def _reference_conditions(generator: "VideoGenerator", encoded, reference_pose: np.ndarray) -> "StreamConditions":
    """The conditions every chunk shares: the encoded prompt, CLIP feature and first-frame condition y, with the
    reference pose image's (H, W, 3) uint8 embedding added to y."""
    from iasa.video.streaming import StreamConditions

    c = generator.components
    context, clip_feature, y = encoded
    with torch.no_grad():
        pose = torch.from_numpy(np.ascontiguousarray(reference_pose)).to(c.device, c.dtype) / 255.0
        pose = rearrange(pose, "h w c -> 1 c h w")
        return StreamConditions(context, clip_feature, y + c.pose_guider.reference_condition(pose))
