"""A loopback-only web preview of a stream while it is generated: the frames as MJPEG, with the speech.

Endpoints: ``/`` a page showing the stream and playing the speech, ``/stream.mjpg`` the frames as a
``multipart/x-mixed-replace`` stream of JPEGs, ``/audio`` the speech file, ``/status`` JSON progress.

Why MJPEG and not a WebSocket: an ``<img>`` plays it with no script in every browser, any HTTP client
(curl, http.client) reads it, and the standard library serves it; a WebSocket needs its handshake and
framing written by hand (or a dependency) and a script to paint each frame. What MJPEG gives up (no
compression across frames; no playback clock, so the server paces the frames itself) does not matter for
a preview on the same machine.

Each frame is JPEG-encoded once, released at the video's frame rate (see _FrameHub) and handed to every
connected client's queue. A queue holds at most CLIENT_QUEUE_FRAMES frames and drops its oldest when full,
so a slow client skips frames and never holds up the generator; a client that connects late starts at the
latest frame. The server binds loopback addresses only: it must never listen on a public interface (see
PublicHostError for remote viewing).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from iasa.errors import InputError, MissingFileError
from iasa.video.stream_clock import StreamClock

# About a third of a second at 25 fps: the most a slow client lags behind before it skips frames.
CLIENT_QUEUE_FRAMES = 8
JPEG_QUALITY = 85
# A client that stops reading for this long is dropped, so no request thread waits on it for ever.
CLIENT_TIMEOUT_SECONDS = 10.0
# How soon stop() takes effect (the serving loop checks for it this often while idle).
SHUTDOWN_POLL_SECONDS = 0.05
BOUNDARY = "frame"
# The formats iasa.motion.audio reads, as browsers name them.
AUDIO_CONTENT_TYPES = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".m4a": "audio/mp4", ".ogg": "audio/ogg",
}  # fmt: skip


class PublicHostError(InputError, ValueError):
    """A host for the preview server that is not a loopback address."""


def loopback_address(host: str) -> str:
    """``host`` as a loopback IP address ('localhost' -> '127.0.0.1'); PublicHostError for any other."""
    address = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise PublicHostError(
            f"preview server host {host!r} is not a loopback address; the preview binds only 127.0.0.1, ::1 or "
            "localhost, never a public interface (to watch from another machine, forward the port: "
            "ssh -L PORT:127.0.0.1:PORT this-machine)"
        )
    return address


def next_release(due: float, now: float, interval: float) -> float:
    """When the frame after one released at ``now`` is due, for frames ``interval`` seconds apart: on the
    grid ``due + interval`` while the stream keeps up (a late wake-up is not carried forward), or
    ``now + interval`` once frames arrived late (no burst to catch up: playback resumes at its pace)."""
    return due + interval if now < due + interval else now + interval


class _Client:
    """One /stream.mjpg connection's queue of JPEG frames; the oldest drops when it is full."""

    def __init__(self) -> None:
        self.frames: deque[bytes] = deque(maxlen=CLIENT_QUEUE_FRAMES)


class _FrameHub:
    """Published frames, released at the video's pace to the clients; every method is safe from any thread.

    A chunked generator delivers several frames at once, and may run ahead of real time; released one
    every ``frame_interval`` seconds (0: as published), the page plays them smoothly and in step with the
    speech, which starts with the first frame. Frames published ahead of their time wait in memory.
    """

    def __init__(self, frame_interval: float) -> None:
        self._frame_interval = frame_interval
        self._changed = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._clients: set[_Client] = set()
        self._latest: bytes | None = None
        self.clock = StreamClock()
        self.released = 0
        self.finishing = False  # no more frames will be published
        self.done = False  # finishing, and every frame was released: a stream ends when its queue drains
        self.stopped = False  # streams end at once

    def publish(self, jpegs: list[bytes]) -> None:
        with self._changed:
            if self.finishing or self.stopped:
                raise RuntimeError("frames published after the preview stream was finished or stopped")
            self._pending.extend(jpegs)
            self.clock.mark_frames(len(jpegs))
            self._changed.notify_all()

    def release_frames(self) -> None:
        """The pacer thread's loop: move pending frames to the clients, one per frame interval."""
        due = None
        with self._changed:
            while not self.stopped:
                if not self._pending:
                    if self.finishing:
                        self.done = True
                        self._changed.notify_all()
                        return
                    self._changed.wait()
                    continue
                now = time.monotonic()
                if due is not None and now < due:
                    self._changed.wait(due - now)
                    continue
                jpeg = self._pending.popleft()
                self._latest = jpeg
                for client in self._clients:
                    client.frames.append(jpeg)
                self.released += 1
                due = next_release(now if due is None else due, now, self._frame_interval)
                self._changed.notify_all()

    def subscribe(self) -> _Client:
        client = _Client()
        with self._changed:
            if self._latest is not None:
                client.frames.append(self._latest)
            self._clients.add(client)
        return client

    def unsubscribe(self, client: _Client) -> None:
        with self._changed:
            self._clients.discard(client)

    def next_frame(self, client: _Client) -> bytes | None:
        """The client's next JPEG, waiting for one; None when its stream ends."""
        with self._changed:
            while not client.frames and not self.done and not self.stopped:
                self._changed.wait()
            if self.stopped or not client.frames:
                return None
            return client.frames.popleft()

    def finish(self) -> None:
        with self._changed:
            self.finishing = True
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self.stopped = True
            self._changed.notify_all()

    def status(self) -> dict:
        with self._changed:
            return {
                "frames": self.clock.frames, "fps": self.clock.sustained_fps, "shown": self.released,
                "done": self.done, "clients": len(self._clients),
            }  # fmt: skip


class _LoopbackServer(ThreadingHTTPServer):
    """Keeps its open connections, so that stopping can cut clients that stalled mid-send."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: _FrameHub, audio_path: Path | None, page: bytes):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.hub, self.audio_path, self.page = hub, audio_path, page
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _PreviewHandler)

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _PreviewHandler(BaseHTTPRequestHandler):
    server: _LoopbackServer
    timeout = CLIENT_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = {"/": self._page, "/stream.mjpg": self._stream, "/audio": self._audio, "/status": self._status}
        if path not in routes:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with contextlib.suppress(OSError):  # the client left, stalled past the timeout, or stop() cut it
            routes[path]()

    def _send_bytes(self, content_type: str, body: bytes) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if content_type.startswith("audio/"):
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> None:
        self._send_bytes("text/html; charset=utf-8", self.server.page)

    def _status(self) -> None:
        self._send_bytes("application/json", json.dumps(self.server.hub.status()).encode())

    def _audio(self) -> None:
        audio = self.server.audio_path
        if audio is None:
            self.send_error(HTTPStatus.NOT_FOUND, "this stream has no audio")
            return
        body = audio.read_bytes()
        content_type = AUDIO_CONTENT_TYPES[audio.suffix.lower()]
        # Browsers ask media for byte ranges (to seek); a single range is all they send.
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted is None or wanted.groups() == ("", ""):
            self._send_bytes(content_type, body)
            return
        first, last = wanted.groups()
        if first:
            start, stop = int(first), min(int(last) + 1 if last else len(body), len(body))
        else:  # "bytes=-N": the last N bytes
            start, stop = max(len(body) - int(last), 0), len(body)
        if start >= stop:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body[start:stop])

    def _stream(self) -> None:
        hub = self.server.hub
        client = hub.subscribe()
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            while (jpeg := hub.next_frame(client)) is not None:
                part = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(part.encode() + jpeg + b"\r\n")
                self.wfile.flush()
            if not hub.stopped:
                self.wfile.write(f"--{BOUNDARY}--\r\n".encode())
        finally:
            hub.unsubscribe(client)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: a request line per frame fetch and status poll would drown the console's progress."""


def _page_html(has_audio: bool) -> bytes:
    """The preview page. Its script records on the page what it shows (the first frame's size and centre
    colour, the audio's duration), which is what the browser test reads back."""
    audio = '<audio id="speech" src="/audio" controls preload="auto"></audio>' if has_audio else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>IASA stream preview</title>
<style>body {{ background: #111; color: #ddd; font: 14px sans-serif; margin: 1em }}
img {{ display: block; background: #000; max-width: 100%; margin-bottom: 0.5em }}</style></head>
<body>
<img id="frame" src="/stream.mjpg" alt="the stream">
{audio}
<p id="state">waiting for the first frame</p>
<script>
const frame = document.getElementById("frame"), state = document.getElementById("state");
const speech = document.getElementById("speech");
function firstFrameShown() {{
  if (frame.naturalWidth === 0) {{ setTimeout(firstFrameShown, 50); return; }}
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  const context = canvas.getContext("2d");
  context.drawImage(frame, frame.naturalWidth / 2, frame.naturalHeight / 2, 1, 1, 0, 0, 1, 1);
  const [red, green, blue] = context.getImageData(0, 0, 1, 1).data;
  state.dataset.frame = `${{frame.naturalWidth}}x${{frame.naturalHeight}} ${{red}},${{green}},${{blue}}`;
  state.textContent = "streaming";
  // The speech starts with the first frame; a browser that blocks sound until a click shows the controls.
  if (speech) speech.play().catch(() => {{ state.textContent = "streaming; press play for the speech"; }});
}}
firstFrameShown();
if (speech) {{
  speech.addEventListener("loadedmetadata", () => {{ state.dataset.audioSeconds = speech.duration.toFixed(3); }});
  speech.addEventListener("error", () => {{ state.dataset.audioError = "the speech could not be loaded"; }});
}}
</script>
</body></html>
""".encode()


class PreviewServer:
    """Serves a stream's frames to a web page on a loopback address while they are generated.

    ``start()`` binds (``port=0``: any free port; see ``url``) and serves from daemon threads;
    ``publish(frames)`` from the generator's thread(s), never waiting on a client; ``finish()`` after the
    last frame (pages keep showing it; the server stays up for reloads); ``stop()`` ends every stream and
    closes the server. ``fps``: the pace at which frames are shown (the video's frame rate); None shows
    them as they are published. Usable as a context manager (start on enter, stop on exit).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, audio_path: str | Path | None = None, fps: float | None = None
    ):
        self.host = loopback_address(host)
        self.port = port
        self.audio_path = None if audio_path is None else Path(audio_path)
        if self.audio_path is not None:
            if not self.audio_path.is_file():
                raise MissingFileError(f"audio {self.audio_path} for the preview does not exist; check the audio= path")
            if self.audio_path.suffix.lower() not in AUDIO_CONTENT_TYPES:
                raise InputError(
                    f"the preview page cannot play {self.audio_path}: give the speech as "
                    f"{'/'.join(ext[1:] for ext in AUDIO_CONTENT_TYPES)}"
                )
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive (or None: as published), got {fps}")
        self._hub = _FrameHub(frame_interval=0.0 if fps is None else 1.0 / fps)
        self._server: _LoopbackServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The page's address, e.g. http://127.0.0.1:8000/ (valid after start())."""
        if self._server is None:
            raise RuntimeError("the preview server has not been started")
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        if self._server is not None or self._hub.stopped:
            raise RuntimeError("a preview server starts once")
        page = _page_html(self.audio_path is not None)
        try:
            server = _LoopbackServer((self.host, self.port), self._hub, self.audio_path, page)
        except OSError as error:
            raise InputError(f"the preview server cannot listen on {self.host}:{self.port} ({error}); pick another port") from error
        if not ipaddress.ip_address(server.server_address[0]).is_loopback:  # never expected; never allowed
            server.server_close()
            raise PublicHostError(f"the preview server bound {server.server_address[0]}, which is not loopback")
        self._server = server
        self._threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS}, name="preview-server",
                daemon=True,
            ),
            threading.Thread(target=self._hub.release_frames, name="preview-pacer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def publish(self, frames: np.ndarray) -> None:
        """Frames (n, H, W, 3) uint8 RGB, each JPEG-encoded once for all clients."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected frames (n, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
        quality = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        jpegs = []
        for frame in frames:
            encoded, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), quality)
            if not encoded:
                raise RuntimeError(f"OpenCV could not JPEG-encode a frame of shape {frame.shape}")
            jpegs.append(jpeg.tobytes())
        self._hub.publish(jpegs)

    def finish(self) -> None:
        """No more frames: the rest are shown at their pace, then every stream ends."""
        self._hub.finish()

    def status(self) -> dict:
        """What /status answers: frames published, their sustained rate (fps; None before a second
        delivery), frames shown (released to the page), done, and the connected stream clients."""
        return self._hub.status()

    def stop(self) -> None:
        """End every stream now, close the listening socket and wait for the server's threads."""
        self._hub.stop()
        if self._server is None:
            return
        self._server.cut_connections()
        self._server.shutdown()
        self._server.server_close()  # joins the request threads, which the cut connections ended
        for thread in self._threads:
            thread.join()
        self._server = None

    def __enter__(self) -> PreviewServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
