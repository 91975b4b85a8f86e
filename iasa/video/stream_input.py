"""A stream's inputs as they become final: speech -> live motion -> keypoints, piece by piece (`live_keypoints`),
and keypoint pieces -> the latent frames' poses and the pose guider's features that a chunk waits for
(`StreamInputs`).

A chunk of latent frames first..stop - 1 can run once the pose guider has its look-ahead: video pose frames up to
4 (stop - 1) + 4 (iasa.video.streaming.PoseFeatureStream), or the end of the stream. The pieces are pulled only
when the next chunk needs them, so a pose image lives from its drawing until the guider has read it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from iasa.attention.config import SparseAttentionConfig
from iasa.motion.motion_file import SmplxMotion
from iasa.motion.procedural import SAMPLE_RATE, LiveProceduralMotion
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.pipeline import KeypointFraming, fit_keypoint_framing, motion_to_keypoints
from iasa.video.latent_grid import TEMPORAL_STRIDE, padded_frame_count
from iasa.video.streaming import LatentFramePose, PoseFeatureStream, latent_frame_poses_from


def live_keypoints(
    waveform: np.ndarray,
    motion: LiveProceduralMotion,
    piece_samples: int,
    pose: PoseConfig,
    reference: WholeBodyKeypoints | None,
) -> Iterator[WholeBodyKeypoints]:
    """The keypoints of the live procedural motion of a 16 kHz waveform (N,) fed piece_samples at a time, as if
    it arrived so: after each piece the frames that became final (pieces that finalise none yield nothing), then
    the rest once the speech ends. The framing (facing, camera, alignment onto the reference) is fitted on the
    first frame and kept (iasa.pose.pipeline.KeypointFraming)."""

    def final_frames() -> Iterator[SmplxMotion]:
        for start in range(0, len(waveform), piece_samples):
            yield motion.push(waveform[start : start + piece_samples])
        yield motion.finish()

    framing: KeypointFraming | None = None
    for frames in final_frames():
        if frames.num_frames == 0:
            continue
        if framing is None:
            framing = fit_keypoint_framing(frames.slice_frames(0, 1), pose, reference=reference)
        yield motion_to_keypoints(frames, pose, reference=reference, framing=framing)


def speech_piece_samples(chunk_latent_frames: int, fps: float) -> int:
    """Samples of speech that a chunk's video frames last: the piece in which scripts/stream.py feeds the speech."""
    return int(round(chunk_latent_frames * TEMPORAL_STRIDE / fps * SAMPLE_RATE))


def clip_pieces(keypoints: WholeBodyKeypoints, frames_per_piece: int) -> Iterator[WholeBodyKeypoints]:
    """Keypoints known in advance, as pieces of frames_per_piece frames."""
    for start in range(0, keypoints.num_frames, frames_per_piece):
        yield keypoints.slice_frames(start, start + frames_per_piece)


class StreamInputs:
    """The latent frames' poses and pose features of a stream whose keypoints arrive in pieces.

    pull() takes the next piece: its pose images (draw: keypoints -> (f, 3, H, W) in [0, 1]) go to `features`,
    and the poses (LatentFramePose, the layout's inputs) of the latent frames it completes are made. When the
    pieces run out, the keypoints are padded to 4n + 1 frames by repeating the last one, as a clip's are, and
    the features are told the end (`finished`). num_frames: the video's frames so far (without the padding);
    first_frame: the keypoints of video frame 0 (after the first piece).
    """

    def __init__(
        self,
        pieces: Iterable[WholeBodyKeypoints],
        features: PoseFeatureStream,
        draw: Callable[[WholeBodyKeypoints], torch.Tensor],
        rule: SparseAttentionConfig,
        token_grid: tuple[int, int],
    ) -> None:
        self._pieces = iter(pieces)
        self.features, self._draw, self._rule, self._token_grid = features, draw, rule, token_grid
        self.finished = False
        self.num_frames = 0
        self.first_frame: WholeBodyKeypoints | None = None
        # Video frames from the last one of the newest complete latent frame (the next one's stand-in for frame 0).
        self._tail: WholeBodyKeypoints | None = None
        self._poses: list[LatentFramePose] = []
        self._poses_start = 0  # latent index of self._poses[0]

    @property
    def latent_frames(self) -> int:
        """Latent frames whose poses are made."""
        return self._poses_start + len(self._poses)

    def pull(self) -> None:
        if self.finished:
            raise ValueError("the stream's inputs have all been pulled")
        piece = next(self._pieces, None)
        if piece is None:
            if self._tail is None:
                raise ValueError("a stream needs at least one frame of keypoints")
            self.finished = True
            padding = padded_frame_count(self.num_frames) - self.num_frames
            if padding:
                last = self._tail.slice_frames(self._tail.num_frames - 1, self._tail.num_frames)
                self._add(last.select_frames(np.zeros(padding, dtype=np.int64)))
            self.features.finish()
        elif piece.num_frames:
            if self.first_frame is None:
                self.first_frame = piece.slice_frames(0, 1)
            self.num_frames += piece.num_frames
            self._add(piece)

    def poses(self, first: int, stop: int) -> list[LatentFramePose]:
        """The poses of latent frames first..stop - 1 (those before first are dropped: chunks move forward)."""
        if stop > self.latent_frames or first < self._poses_start:
            held = f"{self._poses_start}..{self.latent_frames - 1}"
            raise ValueError(f"latent frames {first}..{stop - 1} are not held (held: {held})")
        del self._poses[: first - self._poses_start]
        self._poses_start = first
        return self._poses[: stop - first]

    def _add(self, frames: WholeBodyKeypoints) -> None:
        self.features.push(self._draw(frames))
        self._tail = frames if self._tail is None else self._tail.followed_by(frames)
        received = self.num_frames if not self.finished else padded_frame_count(self.num_frames)
        complete = (received - 1) // TEMPORAL_STRIDE + 1  # latent frame t ends with video frame 4 t
        done = self.latent_frames
        if complete > done:
            tail_start = 0 if done == 0 else TEMPORAL_STRIDE * done - TEMPORAL_STRIDE
            window = self._tail.slice_frames(0, TEMPORAL_STRIDE * (complete - 1) + 1 - tail_start)
            self._poses += latent_frame_poses_from(window, done, self._rule, self._token_grid)
            next_start = TEMPORAL_STRIDE * complete - TEMPORAL_STRIDE
            self._tail = self._tail.slice_frames(next_start - tail_start, self._tail.num_frames)
