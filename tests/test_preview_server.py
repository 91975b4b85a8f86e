"""The loopback preview server read by a plain HTTP client: published frames arrive as an MJPEG stream in
order with their colours, late clients start at the latest frame, slow clients drop the oldest frames,
/status and /audio answer what was published and given, public hosts are refused, stop() ends streams.
A test marked `browser` loads the page in headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from iasa.errors import InputError, MissingFileError
from iasa.motion.audio import AUDIO_EXTENSIONS
from iasa.video.preview_server import (
    AUDIO_CONTENT_TYPES, CLIENT_QUEUE_FRAMES, PreviewServer, PublicHostError, _FrameHub, next_release,
)  # fmt: skip

SIZE = (48, 64)  # (height, width)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
WAIT_SECONDS = 20  # only a bound on waits for the server's threads; no test measures time


def solid_frames(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """(len(colours), 48, 64, 3) uint8 RGB, one solid colour per frame."""
    return np.stack([np.full((*SIZE, 3), colour, np.uint8) for colour in colours])


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there"
        time.sleep(0.01)


def connect(server: PreviewServer) -> http.client.HTTPConnection:
    host, port = server.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=WAIT_SECONDS)


def get(server: PreviewServer, path: str, headers: dict | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    connection = connect(server)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()


def open_stream(server: PreviewServer) -> http.client.HTTPResponse:
    """A /stream.mjpg response; its headers come after the server subscribed the client to new frames."""
    connection = connect(server)
    connection.request("GET", "/stream.mjpg")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
    return response


def next_part(stream: http.client.HTTPResponse) -> np.ndarray | None:
    """The next JPEG of a multipart stream decoded to (H, W, 3) RGB; None at the closing boundary or EOF."""
    boundary = stream.readline()
    if boundary in (b"--frame--\r\n", b""):
        return None
    assert boundary == b"--frame\r\n"
    headers = {}
    while (line := stream.readline()) != b"\r\n":
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    jpeg = stream.read(int(headers["content-length"]))
    assert stream.read(2) == b"\r\n"
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_colours(stream: http.client.HTTPResponse) -> list[tuple[int, int, int]]:
    """The mean colour of every frame until the stream ends, rounded to the nearest published colour
    after checking it is within JPEG error of it."""
    colours = []
    while (frame := next_part(stream)) is not None:
        assert frame.shape == (*SIZE, 3)
        mean = frame.reshape(-1, 3).mean(axis=0)
        nearest = min(COLOURS, key=lambda colour: np.abs(mean - colour).sum())
        assert np.abs(mean - nearest).max() < 4, (mean, nearest)
        colours.append(nearest)
    return colours


def write_tone(path: Path) -> None:
    time_ = np.arange(8000) / 16000
    wavfile.write(path, 16000, (0.3 * np.sin(2 * np.pi * 440 * time_)).astype(np.float32))


@pytest.mark.parametrize("fps", [None, 200.0])  # as published, and paced at the video's rate
def test_frames_published_from_another_thread_arrive_in_order(fps):
    with PreviewServer(fps=fps) as server:
        stream = open_stream(server)

        def generate() -> None:  # two chunks, as a chunked generator delivers them
            server.publish(solid_frames(COLOURS[:2]))
            server.publish(solid_frames(COLOURS[2:]))
            server.finish()

        generator = threading.Thread(target=generate)
        generator.start()
        assert read_colours(stream) == COLOURS
        generator.join()
        status = json.loads(get(server, "/status")[1])
        assert {key: status[key] for key in ("frames", "shown", "done", "clients")} == {
            "frames": 5, "shown": 5, "done": True, "clients": 0,
        }  # fmt: skip
        assert status["fps"] > 0  # the rate of the second chunk after the first
        with pytest.raises(RuntimeError, match="after the preview stream was finished"):
            server.publish(solid_frames(COLOURS[:1]))


def test_a_late_client_starts_at_the_latest_frame():
    with PreviewServer() as server:
        server.publish(solid_frames(COLOURS[:3]))
        wait_until(lambda: server.status()["shown"] == 3)
        stream = open_stream(server)
        server.finish()
        assert read_colours(stream) == [COLOURS[2]]


def test_a_slow_client_keeps_only_the_newest_frames_and_never_blocks_the_publisher():
    hub = _FrameHub(frame_interval=0.0)
    slow = hub.subscribe()
    frames = [str(index).encode() for index in range(3 * CLIENT_QUEUE_FRAMES)]
    hub.publish(frames)  # returns although the client reads nothing
    hub.finish()
    hub.release_frames()  # the pacer's loop, here in this thread: returns once all are released
    received = []
    while (frame := hub.next_frame(slow)) is not None:
        received.append(frame)
    assert received == frames[-CLIENT_QUEUE_FRAMES:]
    assert hub.status()["shown"] == len(frames) and hub.status()["done"]


def test_release_times_keep_the_frame_grid_and_restart_it_after_a_late_frame():
    assert next_release(due=10.0, now=10.001, interval=0.04) == pytest.approx(10.04)  # a late wake-up: on the grid
    assert next_release(due=10.0, now=10.5, interval=0.04) == pytest.approx(10.54)  # frames came late: from now
    assert next_release(due=10.0, now=10.0, interval=0.0) == 10.0  # no pacing


def test_audio_is_served_whole_and_by_range_with_its_type(tmp_path):
    write_tone(tmp_path / "speech.wav")
    content = (tmp_path / "speech.wav").read_bytes()
    with PreviewServer(audio_path=tmp_path / "speech.wav") as server:
        response, body = get(server, "/audio")
        assert response.status == 200 and response.getheader("Content-Type") == "audio/wav" and body == content
        response, body = get(server, "/audio", {"Range": "bytes=100-199"})
        assert response.status == 206 and body == content[100:200]
        assert response.getheader("Content-Range") == f"bytes 100-199/{len(content)}"
        response, body = get(server, "/audio", {"Range": "bytes=-50"})
        assert response.status == 206 and body == content[-50:]
        assert get(server, "/audio", {"Range": f"bytes={len(content)}-"})[0].status == 416


class _PageElements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, str] = {}

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        if tag in ("img", "audio"):
            self.sources[tag] = dict(attributes)["src"]


def test_the_page_shows_the_stream_and_plays_the_audio_only_when_given(tmp_path):
    write_tone(tmp_path / "speech.wav")
    for audio, expected in ((tmp_path / "speech.wav", {"img": "/stream.mjpg", "audio": "/audio"}), (None, {"img": "/stream.mjpg"})):
        with PreviewServer(audio_path=audio) as server:
            response, body = get(server, "/")
            assert response.status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
            page = _PageElements()
            page.feed(body.decode())
            assert page.sources == expected
            assert get(server, "/audio")[0].status == (200 if audio else 404)
            assert get(server, "/missing")[0].status == 404


@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.168.1.20", "8.8.8.8", "::", "example.com"])
def test_a_host_that_is_not_loopback_is_refused(host):
    with pytest.raises(PublicHostError, match="not a loopback address"):
        PreviewServer(host=host)


def test_loopback_hosts_bind_loopback():
    with PreviewServer(host="localhost") as server:
        assert server.url.startswith("http://127.0.0.1:") and get(server, "/status")[0].status == 200
    server = PreviewServer(host="::1")
    try:
        server.start()
    except InputError as error:  # a machine without IPv6 on loopback
        pytest.skip(f"no IPv6 loopback here: {error}")
    try:
        assert server.url.startswith("http://[::1]:") and get(server, "/status")[0].status == 200
    finally:
        server.stop()


def test_bad_audio_is_refused_with_the_file_named(tmp_path):
    with pytest.raises(MissingFileError, match="missing.wav"):
        PreviewServer(audio_path=tmp_path / "missing.wav")
    (tmp_path / "speech.aiff").write_bytes(b"not playable in a page")
    with pytest.raises(InputError, match="speech.aiff.*wav/mp3/flac/m4a/ogg"):
        PreviewServer(audio_path=tmp_path / "speech.aiff")
    assert set(AUDIO_CONTENT_TYPES) == set(AUDIO_EXTENSIONS)  # every format the pipeline reads plays in the page


def test_stop_ends_the_stream_of_a_connected_client_and_leaves_no_thread():
    threads_before = set(threading.enumerate())
    server = PreviewServer()
    server.start()
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    stream = open_stream(server)
    server.publish(solid_frames(COLOURS[:1]))
    assert next_part(stream) is not None
    server.stop()  # the generator did not finish: the stream ends without its closing boundary
    assert stream.read() == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    assert set(threading.enumerate()) == threads_before


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium / chromium-browser / google-chrome binary")
def test_headless_chromium_shows_a_frame_while_the_stream_runs_and_loads_the_speech(tmp_path):
    write_tone(tmp_path / "speech.wav")
    browser_done = threading.Event()
    with PreviewServer(audio_path=tmp_path / "speech.wav", fps=25) as server:

        def generate() -> None:  # a never-ending stream until the browser has answered: the page sees it live
            index = 0
            while not browser_done.is_set():
                server.publish(solid_frames([COLOURS[index % len(COLOURS)]]))
                index += 1
                browser_done.wait(0.04)
            server.finish()

        generator = threading.Thread(target=generate)
        generator.start()
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", server.url,
        ]  # fmt: skip
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        finally:
            browser_done.set()
            generator.join()
    assert completed.returncode == 0, completed.stderr[-2000:]
    state = next(line for line in completed.stdout.splitlines() if 'id="state"' in line)
    assert 'data-frame="' in state, state  # the page's script saw a decoded frame
    size, colour = state.split('data-frame="', 1)[1].split('"', 1)[0].split()  # "64x48 r,g,b": the centre pixel
    assert size == f"{SIZE[1]}x{SIZE[0]}"
    colour = np.array([int(value) for value in colour.split(",")])
    assert min(np.abs(colour - published).max() for published in COLOURS) < 8
    assert float(state.split('data-audio-seconds="', 1)[1].split('"', 1)[0]) == pytest.approx(0.5, abs=0.01)
