"""scripts/stream.py with the live procedural motion (live_motion: true) on the smoke model: the speech goes in a
chunk's duration at a time, a chunk runs as soon as its frames' motion and the pose guider's look-ahead are final,
and the video equals the stream of the same live motion computed for the whole speech first."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from einops import rearrange
from scipy.io import wavfile

from iasa.attention.config import SparseAttentionConfig
from iasa.config import load_config
from iasa.motion.audio import load_audio
from iasa.motion.procedural import SAMPLE_RATE, LiveProceduralMotion, ProceduralMotionGenerator
from iasa.motion.motion_file import SmplxMotion
from iasa.pose import draw_pose_frames, motion_to_keypoints
from iasa.pose.config import PoseConfig
from iasa.pose.pipeline import fit_keypoint_framing
from iasa.pose.style import UNIANIMATE_STYLE
from iasa.pose.synthetic_speaker import synthetic_speech
from iasa.video.config import LongVideoConfig
from iasa.video.inference import inference_pose_style, reference_image_and_pose
from iasa.video.pipeline import VideoGenerator, pad_keypoints
from iasa.video.pose_guider import PoseGuider
from iasa.video.stream_input import StreamInputs, clip_pieces, live_keypoints, speech_piece_samples
from iasa.video.stream_run import StreamInferenceConfig, run_stream, stream_clip_frames, stream_frames
from iasa.video.streaming import PoseFeatureStream, latent_frame_poses
from iasa.video.video_io import probe_video
from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 1.0  # 30 frames, padded to 33: 9 latent frames

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    wavfile.write(tmp_path / "speech.wav", SAMPLE_RATE, synthetic_speech(SECONDS, seed=5))
    cv2.imwrite(str(tmp_path / "person.png"), (np.random.default_rng(0).random((72, 64, 3)) * 255).astype(np.uint8))
    return {"audio": tmp_path / "speech.wav", "image": tmp_path / "person.png", "out": tmp_path / "out.mp4"}


def smoke_config(inputs: dict[str, Path], *extra: str) -> StreamInferenceConfig:
    paths = [f"{key}={value}" for key, value in inputs.items()]
    return load_config(StreamInferenceConfig, ROOT / "config/stream_iasa.yaml", [*smoke_overrides("stream.py"), *paths, *extra])


def test_cli_smoke_with_the_live_motion_writes_every_frame(inputs, run_script):
    paths = [f"{key}={value}" for key, value in inputs.items()]
    run_script("stream.py", "--smoke", "--no-progress", "live_motion=true", *paths)
    info = probe_video(inputs["out"])
    assert info.frames == round(SECONDS * 30) and info.has_audio


def whole_live_motion(waveform: np.ndarray) -> SmplxMotion:
    live = LiveProceduralMotion()
    pieces = [live.push(waveform), live.finish()]
    arrays = (np.concatenate([getattr(piece, name) for piece in pieces]) for name in ("poses", "expressions", "trans"))
    return SmplxMotion(*arrays, pieces[0].betas)


@pytest.mark.parametrize("chunk", [1, 2])
def test_the_live_stream_equals_the_stream_of_the_whole_live_motion(inputs, chunk, captured_stream, monkeypatch):
    """The chunks' latents (the streaming tests' tolerance: the smoke model's random decoder makes near-black
    frames) and the written frames."""
    config = smoke_config(inputs, f"streaming.chunk_latent_frames={chunk}")
    assert config.live_motion  # the shipped default
    generator = VideoGenerator.from_config(config.model, config.attention, LongVideoConfig(), config.speed.for_generator())
    monkeypatch.setattr(VideoGenerator, "from_config", classmethod(lambda cls, *args, **kwargs: generator))
    latents, written = captured_stream
    report = run_stream(config, progress=False)
    assert len(np.concatenate(written)) == report.frames == probe_video(inputs["out"]).frames == round(SECONDS * 30)
    assert [piece.shape[2] for piece in latents] == [chunk] * (9 // chunk) + [9 % chunk] * (9 % chunk > 0)
    streamed, frames = torch.cat(latents, 2), np.concatenate(written)

    def stream_of(keypoints) -> tuple[torch.Tensor, np.ndarray]:
        latents.clear()
        video = np.concatenate(list(stream_clip_frames(generator, config, image, None, keypoints, pose_style, progress=False)))
        return torch.cat(latents, 2), video

    # The same live motion for the whole speech, framed by its first frame, then streamed from known keypoints.
    waveform = load_audio(config.audio)
    motion = whole_live_motion(waveform)
    image, reference = reference_image_and_pose(config, (config.pose.image_height, config.pose.image_width))
    keypoints = motion_to_keypoints(motion, config.pose, framing=fit_keypoint_framing(motion.slice_frames(0, 1), config.pose))
    pose_style = inference_pose_style(config.pose.style, config.model)
    expected, expected_frames = stream_of(keypoints)
    assert reference is None and expected_frames.shape == frames.shape
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(frames.astype(int) - expected_frames.astype(int)).max() <= 1
    # ... and the motion matters: the offline motion's stream is another one
    offline, _ = stream_of(motion_to_keypoints(ProceduralMotionGenerator()(waveform), config.pose))
    assert (offline - expected).abs().max() > 1e-3


@pytest.mark.parametrize("chunk", [1, 2])
def test_the_first_chunk_runs_once_its_speech_is_in(inputs, chunk):
    """Latent frames 0..C - 1 need video pose frames up to 4 (C - 1) + 4 (the pose guider's look-ahead), whose
    motion is final with the speech through 9 frames later: the first chunk comes after the first piece of
    speech (a chunk's duration each) that reaches the end of frame 4 C + 9."""
    config = smoke_config(inputs, f"streaming.chunk_latent_frames={chunk}")
    generator = VideoGenerator.from_config(config.model, config.attention, LongVideoConfig(), config.speed.for_generator())
    image, _ = reference_image_and_pose(config, (config.pose.image_height, config.pose.image_width))
    waveform = load_audio(config.audio)
    live, pushed = LiveProceduralMotion(), []
    push = live.push
    live.push = lambda samples: (pushed.append(len(samples)), push(samples))[1]
    piece = speech_piece_samples(chunk, 30.0)
    pieces = live_keypoints(waveform, live, piece, config.pose, None)
    chunks = stream_frames(generator, config, image, None, pieces, inference_pose_style(config.pose.style, config.model), False)
    first = next(chunks)
    needed = int(np.round((4 * chunk + 9 + 1) * SAMPLE_RATE / 30))  # the end of frame 4 C + 9
    assert sum(pushed) == -(-needed // piece) * piece < len(waveform)
    assert len(first) == 1 + 4 * (chunk - 1)  # latent frame 0 decodes to one video frame, later ones to four


@pytest.mark.parametrize("piece", [1, 3, 4, 7, 36])
def test_stream_inputs_from_pieces_are_the_whole_clips(piece):
    """Keypoints arriving `piece` frames at a time give the latent frames' poses of the whole padded clip and the
    same pose images to the guider, however they are cut."""
    motion = ProceduralMotionGenerator()(synthetic_speech(1.2, seed=8))
    keypoints = motion_to_keypoints(motion, PoseConfig(image_height=64, image_width=64))
    assert keypoints.num_frames == 36  # padded to 37: 10 latent frames
    rule, grid = SparseAttentionConfig(), (4, 4)
    expected = latent_frame_poses(pad_keypoints(keypoints, 37), rule, grid)
    pushed: list[torch.Tensor] = []

    def draw(frames) -> torch.Tensor:
        images = rearrange(torch.from_numpy(draw_pose_frames(frames, UNIANIMATE_STYLE)) / 255.0, "f h w c -> f c h w")
        pushed.append(images)
        return images

    features = PoseFeatureStream(PoseGuider(dit_dim=8, hidden_channels=4))
    inputs = StreamInputs(clip_pieces(keypoints, piece), features, draw, rule, grid)
    while not inputs.finished:
        inputs.pull()
    assert inputs.num_frames == 36 and inputs.features.received == 37 and inputs.latent_frames == 10
    for got, want in zip(inputs.poses(0, 10), expected, strict=True):
        np.testing.assert_array_equal(got.points, want.points)
        np.testing.assert_array_equal(got.visible, want.visible)
        assert torch.equal(got.regions, want.regions)
    whole = torch.from_numpy(draw_pose_frames(pad_keypoints(keypoints, 37), UNIANIMATE_STYLE)) / 255.0
    whole = rearrange(whole, "f h w c -> f c h w")
    assert torch.equal(torch.cat(pushed), whole)
    assert expected[3].regions.any()  # the layout has regions to compare
