"""StreamClock against a fake clock: latency from inputs-ready to the first frame, and the sustained rate
computed by hand from the delivery times (the first delivery left out)."""

from __future__ import annotations

import pytest

from iasa.video.stream_clock import StreamClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_latency_and_sustained_rate_of_chunked_deliveries():
    fake = FakeClock()
    clock = StreamClock(fake)
    clock.mark_inputs_ready()
    fake.now = 101.5
    clock.mark_frames(4)  # the first chunk: 1.5 s of latency
    assert clock.first_frame_latency == pytest.approx(1.5) and clock.sustained_fps is None
    for _ in range(5):  # then 4 frames every 0.2 s: 20 fps
        fake.now += 0.2
        clock.mark_frames(4)
    clock.mark_frames(0)  # an empty delivery changes nothing
    assert clock.frames == 24
    assert clock.sustained_fps == pytest.approx(20 / 1.0)
    assert clock.summary(video_fps=25) == (
        "first frame 1.50 s after the inputs were ready; 20.0 fps sustained over 24 frames (0.80x real time at 25 fps)"
    )


def test_missing_marks_give_none_not_a_made_up_number():
    fake = FakeClock()
    clock = StreamClock(fake)
    assert clock.first_frame_latency is None and clock.sustained_fps is None
    clock.mark_frames(3)  # no inputs-ready mark: no latency, and one delivery: no rate
    assert clock.first_frame_latency is None and clock.sustained_fps is None
    assert clock.summary() == "3 frames in one delivery (no sustained rate)"
    fake.now += 0.5
    clock.mark_frames(1)
    assert clock.sustained_fps == pytest.approx(2.0)
    assert clock.summary() == "2.0 fps sustained over 4 frames"
    with pytest.raises(ValueError, match=">= 0"):
        clock.mark_frames(-1)
