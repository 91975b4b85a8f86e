"""scripts/stream.py end to end on the tiny model on the CPU: the mp4 is written with every frame and the speech,
latency and fps are reported, the --serve preview sends the generated frames to an HTTP client, and (marked
`browser`) headless Chromium shows one on the page."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from iasa.config import load_config
from iasa.errors import InputError
from iasa.video.stream_run import StreamInferenceConfig, run_stream
from iasa.video.video_io import probe_video

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 0.5  # 15 frames at 30 fps -> 4 latent frames
TINY = [
    "model.model_size=tiny", "model.model_dir=null", "model.unianimate_checkpoint=null", "model.lora_path=null",
    "model.pose_guider_path=null", "model.device=cpu", "model.dtype=float32", "pose.image_height=32",
    "pose.image_width=48", "attention.attention=iasa", "attention.backend=reference", "detect_reference_pose=false",
    "speed.decoder=wan", "streaming.chunk_latent_frames=2",
]  # fmt: skip
WAIT_SECONDS = 120
# A grid of 6 x 4 tokens, so that frames cache different numbers of region tokens (a live cache that grows).
LARGER = ["pose.image_height=96", "pose.image_width=64"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    time_ = np.arange(int(16000 * SECONDS)) / 16000
    wavfile.write(tmp_path / "speech.wav", 16000, (0.3 * np.sin(2 * np.pi * 220 * time_) * (np.sin(2 * np.pi * 4 * time_) > 0)).astype(np.float32))
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "person.png"), image)
    return {"audio": tmp_path / "speech.wav", "image": tmp_path / "person.png", "out": tmp_path / "out.mp4"}


def config(inputs: dict[str, Path], *extra: str) -> StreamInferenceConfig:
    paths = [f"{key}={value}" for key, value in inputs.items()]
    return load_config(StreamInferenceConfig, ROOT / "config/stream_iasa.yaml", [*TINY, *paths, *extra])


def test_stream_writes_every_frame_with_the_speech_and_reports_latency(inputs):
    report = run_stream(config(inputs), progress=False)
    assert report.frames == round(SECONDS * 30) and report.video_fps == 30
    assert report.first_frame_latency_s is not None and report.first_frame_latency_s > 0
    assert report.sustained_fps is not None  # two chunks at least: a second delivery
    info = probe_video(inputs["out"])
    assert info.frames == report.frames and info.has_audio


def test_cli_prints_latency_and_fps_and_refuses_a_bidirectional_rule(inputs, run_script, capsys):
    paths = [f"{key}={value}" for key, value in inputs.items()]
    run_script("stream.py", "--config", ROOT / "config/stream_iasa.yaml", "--no-progress", *TINY, *paths)
    printed = capsys.readouterr().out
    assert "first-frame latency" in printed and "fps" in printed and f"wrote {inputs['out']}" in printed
    with pytest.raises(InputError, match="attention.sparse.direction"):
        run_stream(config(inputs, "attention.sparse.direction=both"), progress=False)


def read_frames(response: http.client.HTTPResponse) -> list[np.ndarray]:
    """Every JPEG of a multipart stream until it ends."""
    frames = []
    while (boundary := response.readline()) not in (b"--frame--\r\n", b""):
        assert boundary == b"--frame\r\n"
        headers = {}
        while (line := response.readline()) != b"\r\n":
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        jpeg = response.read(int(headers["content-length"]))
        response.read(2)
        frames.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return frames


def test_serve_sends_the_generated_frames_to_an_http_client(inputs):
    received: list[np.ndarray] = []
    reader: list[threading.Thread] = []

    def on_url(url: str) -> None:  # subscribe before the first frame, then read in the background
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_SECONDS)
        connection.request("GET", "/stream.mjpg")
        response = connection.getresponse()
        assert response.status == 200
        reader.append(threading.Thread(target=lambda: received.extend(read_frames(response))))
        reader[0].start()

    report = run_stream(config(inputs, "preview_port=0"), serve=True, progress=False, on_url=on_url)
    reader[0].join(WAIT_SECONDS)
    assert len(received) == report.frames
    # the frames served are the frames written (up to JPEG and H.264 error)
    assert received[0].shape == (32, 48, 3)
    written = read_video_frames(inputs["out"])
    assert np.abs(received[-1].astype(float) - written[-1].astype(float)).mean() < 12


def read_video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium / chromium-browser / google-chrome binary")
def test_headless_chromium_shows_a_generated_frame(inputs, tmp_path):
    result: dict[str, subprocess.CompletedProcess] = {}
    browser: list[threading.Thread] = []

    def on_url(url: str) -> None:  # the page loads while the stream runs
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url,
        ]  # fmt: skip
        browser.append(threading.Thread(target=lambda: result.update(run=subprocess.run(command, capture_output=True, text=True, timeout=300))))
        browser[0].start()

    run_stream(config(inputs, "preview_port=0"), serve=True, progress=False, on_url=on_url, hold=lambda server: browser[0].join())
    completed = result["run"]
    assert completed.returncode == 0, completed.stderr[-2000:]
    state = next(line for line in completed.stdout.splitlines() if 'id="state"' in line)
    assert 'data-frame="' in state, state  # the page's script saw a decoded frame
    size = state.split('data-frame="', 1)[1].split('"', 1)[0].split()[0]
    assert size == "48x32"


def assert_compiled_nothing_after_the_warm_up(at_warmup: dict[str, int], counted_calls: list, blocks: int) -> None:
    """at_warmup: the graph count and compiled block calls when the warm-up ended. The warm-up ran one compiled
    whole chunk; the real stream compiled nothing more and ran its two whole chunks compiled."""
    from torch._dynamo.utils import counters

    assert at_warmup["graphs"] >= 1 and at_warmup["calls"] == blocks
    assert counters["stats"]["unique_graphs"] == at_warmup["graphs"] and sum(counters["recompiles"].values()) == 0
    assert len(counted_calls) - at_warmup["calls"] == 2 * blocks


def test_compiled_live_stream_warms_up_first_and_equals_the_eager_stream(
    inputs, counted_compiled_blocks, captured_stream, monkeypatch
):
    """speed.compile_dit: the warm-up stream (its output discarded) compiles the block graph before the clock starts:
    the real stream's chunks compile nothing (the whole ones run compiled, the short last one eagerly) and its
    latents and frames equal those of the eager stream (live motion, sparse rule, a growing cache when eager)."""
    import torch
    from torch._dynamo.utils import counters

    from iasa.video.config import LongVideoConfig
    from iasa.video.pipeline import VideoGenerator

    latents, written = captured_stream
    first = config(inputs, *LARGER)
    generator = VideoGenerator.from_config(first.model, first.attention, LongVideoConfig(), first.speed.for_generator())
    monkeypatch.setattr(VideoGenerator, "from_config", classmethod(lambda cls, *args, **kwargs: generator))  # one model

    eager = run_stream(config(inputs, *LARGER), progress=False, on_warmup=lambda seconds: pytest.fail("warm-up without compile_dit"))
    expected_latents, expected_frames = torch.cat(latents, 2), np.concatenate(written)
    assert counted_compiled_blocks == [] and eager.warmup_s is None
    latents.clear(), written.clear()
    at_warmup: dict[str, int] = {}

    def warmed_up(seconds: float) -> None:  # the real stream starts from here: forget the warm-up's chunks
        at_warmup.update(graphs=counters["stats"]["unique_graphs"], calls=len(counted_compiled_blocks))
        latents.clear()

    report = run_stream(config(inputs, *LARGER, "speed.compile_dit=true"), progress=False, on_warmup=warmed_up)
    assert_compiled_nothing_after_the_warm_up(at_warmup, counted_compiled_blocks, len(generator.components.dit.blocks))
    assert [piece.shape[2] for piece in latents] == [2, 2, 1]  # 15 frames: 5 latent frames in chunks of 2
    torch.testing.assert_close(torch.cat(latents, 2), expected_latents, rtol=1e-5, atol=1e-5)
    assert report.frames == eager.frames and report.warmup_s is not None and report.warmup_s > 0
    assert np.abs(np.concatenate(written).astype(int) - expected_frames.astype(int)).max() <= 1


def test_the_warm_up_reaches_the_first_compiled_chunk():
    """Sparse: the first whole chunk has the stream's shape. Dense: compiled once frame 0 + cache_frames slots are
    full (tests/test_streaming.py: chunks of 2, cache_frames 3, compiled from latent frame 4), so the warm-up fills
    them and runs one whole chunk more."""
    from iasa.video.config import StreamingConfig
    from iasa.video.stream_run import warmup_latent_frames

    assert warmup_latent_frames(StreamingConfig(chunk_latent_frames=2, cache_frames=3), sparse=True) == 2
    assert warmup_latent_frames(StreamingConfig(chunk_latent_frames=2, cache_frames=3), sparse=False) == 4 + 2
    assert warmup_latent_frames(StreamingConfig(chunk_latent_frames=2, cache_frames=24), sparse=False) == 26 + 2
    assert warmup_latent_frames(StreamingConfig(chunk_latent_frames=1, cache_frames=24), sparse=False) == 25 + 1


def test_a_compiled_clip_stream_compiles_nothing_after_a_warm_up_whose_frames_hold_more(
    inputs, counted_compiled_blocks, captured_stream
):
    """A clip whose frames cache fewer region tokens than the warm-up's pose (no reference keypoints: the rest pose)
    and so has smaller slots (stream_slot_tokens of the clip): the warm-up's one compiled chunk runs at the clip's
    slot size (its cache grows only after it), so the real stream compiles nothing more, and its latents and frames
    equal those of the eager stream of the clip."""
    from dataclasses import replace

    import torch
    from torch._dynamo.utils import counters

    from iasa.video.config import LongVideoConfig
    from iasa.video.inference import inference_pose_style
    from iasa.video.pipeline import VideoGenerator, pad_keypoints
    from iasa.video.stream_run import rest_pose_keypoints, stream_clip_frames
    from iasa.video.streaming import cached_tokens_of, latent_frame_poses

    eager, compiled = config(inputs, *LARGER), config(inputs, *LARGER, "speed.compile_dit=true")
    generator = VideoGenerator.from_config(eager.model, eager.attention, LongVideoConfig(), eager.speed.for_generator())
    pose_style = inference_pose_style(eager.pose.style, eager.model)
    image = (np.random.default_rng(1).random((96, 64, 3)) * 255).astype(np.uint8)
    rest = pad_keypoints(rest_pose_keypoints(eager), 15)

    def half_size(points: np.ndarray) -> np.ndarray:  # the speaker at half size about the image's centre
        return (points - 0.5) * 0.5 + 0.5

    clip = replace(rest, **{name: half_size(getattr(rest, name)) for name in ("body", "hands", "face", "feet")})
    rule, grid = eager.attention.sparse, (96 // 16, 64 // 16)

    def cached_tokens(keypoints) -> list[int]:
        poses = latent_frame_poses(pad_keypoints(keypoints, 17), rule, grid)
        return [int(cached_tokens_of(pose, rule).numel()) for pose in poses]

    assert max(cached_tokens(clip)) == 9 < min(cached_tokens(rest)) == 16  # the warm-up's frames hold more
    latents, written = captured_stream
    expected_frames = np.concatenate(list(stream_clip_frames(generator, eager, image, None, clip, pose_style, False)))
    expected_latents = torch.cat(latents, 2)
    assert counted_compiled_blocks == []
    latents.clear()
    at_warmup: dict[str, int] = {}

    def warmed_up(seconds: float) -> None:  # the real stream starts from here: forget the warm-up's chunks
        at_warmup.update(graphs=counters["stats"]["unique_graphs"], calls=len(counted_compiled_blocks))
        latents.clear()

    frames = np.concatenate(list(stream_clip_frames(generator, compiled, image, None, clip, pose_style, False, on_warmup=warmed_up)))
    assert_compiled_nothing_after_the_warm_up(at_warmup, counted_compiled_blocks, len(generator.components.dit.blocks))
    assert [piece.shape[2] for piece in latents] == [2, 2, 1]  # 15 frames: 5 latent frames in chunks of 2
    torch.testing.assert_close(torch.cat(latents, 2), expected_latents, rtol=1e-5, atol=1e-5)
    assert frames.shape == expected_frames.shape == (15, 96, 64, 3)
    assert np.abs(frames.astype(int) - expected_frames.astype(int)).max() <= 1
