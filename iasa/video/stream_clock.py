"""How fast a stream starts and how fast it flows: first-frame latency and sustained frame rate.

Latency runs from the moment the inputs are ready (speech and image read, model loaded: when the user
starts waiting for video) to the first frame. The sustained rate leaves the first delivery out: its frames
arrive together at the latency mark, so counting them would credit start-up time to the frame rate; what
remains is the rate at which frames keep coming, the number to hold against the video's own fps to know
whether the stream keeps up with the speech.
"""

from __future__ import annotations

import time
from typing import Callable


class StreamClock:
    """Marks of one stream's timeline; ``clock`` returns seconds (monotonic). One thread marks."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self.inputs_ready_at: float | None = None
        self.first_frames_at: float | None = None
        self.last_frames_at: float | None = None
        self.first_delivery_frames = 0
        self.frames = 0

    def mark_inputs_ready(self) -> None:
        self.inputs_ready_at = self._clock()

    def mark_frames(self, count: int) -> None:
        """``count`` frames were delivered now (a chunk decoded, written, published)."""
        if count < 0:
            raise ValueError(f"frame count must be >= 0, got {count}")
        if count == 0:
            return
        now = self._clock()
        if self.first_frames_at is None:
            self.first_frames_at = now
            self.first_delivery_frames = count
        self.last_frames_at = now
        self.frames += count

    @property
    def first_frame_latency(self) -> float | None:
        """Seconds from mark_inputs_ready to the first frame; None before both happened."""
        if self.inputs_ready_at is None or self.first_frames_at is None:
            return None
        return self.first_frames_at - self.inputs_ready_at

    @property
    def sustained_fps(self) -> float | None:
        """Frames after the first delivery per second since it; None until a later delivery came."""
        if self.first_frames_at is None or self.last_frames_at == self.first_frames_at:
            return None
        return (self.frames - self.first_delivery_frames) / (self.last_frames_at - self.first_frames_at)

    def summary(self, video_fps: float | None = None) -> str:
        """One line for the console; with ``video_fps``, the sustained rate as a multiple of real time."""
        parts = []
        if self.first_frame_latency is not None:
            parts.append(f"first frame {self.first_frame_latency:.2f} s after the inputs were ready")
        fps = self.sustained_fps
        if fps is None:
            parts.append(f"{self.frames} frames in one delivery (no sustained rate)")
        else:
            rate = f"{fps:.1f} fps sustained over {self.frames} frames"
            if video_fps is not None:
                rate += f" ({fps / video_fps:.2f}x real time at {video_fps:g} fps)"
            parts.append(rate)
        return "; ".join(parts)
