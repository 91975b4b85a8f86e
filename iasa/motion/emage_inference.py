"""Windowed EMAGE inference: a 16 kHz mono waveform of any length -> SMPL-X motion at 30 fps.

Windows as in the official loop: ``pose_length`` (64) frames, each seeded by the last ``seed_frames``
(4) frames decoded from the previous window, so window w starts at frame w * 60.

Audio slices as in the official loop (PantoMatrix models/emage_audio/modeling_emage_audio.py): with the
integer ``audio_sr // pose_fps`` = 16000 // 30 = 533 samples per frame, window w reads 64 * 533 = 34,112
samples from sample w * 60 * 533 = 31,980 w. The model was trained on audio cut the same way (PantoMatrix
datasets/beat2.py: a clip from frame s reads samples from s * int(16000 / 30)), so these slices give every
frame the audio offset it had in training. Against wall-clock time that offset grows by a third of a sample
per frame (20 samples = 1.25 ms a window, about 1.1 frames a minute), in training as here.

Differences from the official loop, all at the edges:
- the output has exactly round(duration * fps) frames: the last window is a full window padded
  with silence, its padding trimmed afterwards (the official loop ran a shorter last window, or
  dropped it when at most 4 frames were left, losing up to 8 tail frames);
- audio shorter than a window is padded, so any length works (the official loop crashed below
  ~0.3 s).

With these slices every window but the last reproduces the official loop's output to float precision
(checked against the PantoMatrix code with random weights).

Batching: the two waveform encoders (about a fifth of the CPU time) run over all windows at once, in
chunks of ``audio_batch_windows``. The transformer runs window after window, because each window's
seed is decoded from the previous window's prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iasa.motion.emage_checkpoint import load_emage
from iasa.motion.emage_config import EmageConfig, read_emage_config
from iasa.motion.emage_model import SEED_EXTRA_FEATURES, EmageAudioModel
from iasa.motion.emage_vq import EmageMotionDecoder
from iasa.motion.motion_file import NUM_BETAS, SmplxMotion
from iasa.motion.rotation import axis_angle_to_rot6d

PARTS = ("face", "upper", "hands", "lower")
DEFAULT_AUDIO_BATCH_WINDOWS = 32  # windows per waveform-encoder call (bounds memory on long audio)


def round_half_up_ratio(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) for non-negative integers, halves rounded up, exactly."""
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True)
class AudioWindowPlan:
    """Where the audio windows (EMAGE's pose_length frames each) of a clip of ``num_frames`` frames lie.

    Window w covers frames [w * step, w * step + window_frames); its first ``seed_frames`` repeat
    the previous window's last ones. Enough windows are planned to reach ``num_frames`` (at least
    one), so ``covered_frames`` >= num_frames and the surplus is trimmed after decoding.
    """

    num_frames: int
    window_frames: int
    seed_frames: int
    sample_rate: int
    fps: int

    @property
    def step(self) -> int:
        return self.window_frames - self.seed_frames

    @property
    def num_windows(self) -> int:
        return max(1, math.ceil((self.num_frames - self.seed_frames) / self.step))

    @property
    def covered_frames(self) -> int:
        return self.num_windows * self.step + self.seed_frames

    @property
    def samples_per_frame(self) -> int:
        """The official loop's (and training's) integer samples per frame: 16000 // 30 = 533."""
        return self.sample_rate // self.fps

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame

    def start_sample(self, window: int) -> int:
        """First audio sample of ``window``: its first frame times the integer samples per frame."""
        return window * self.step * self.samples_per_frame

    def audio_windows(self, waveform: torch.Tensor) -> torch.Tensor:
        """(samples,) -> (num_windows, window_samples), zero-padded past the end of the audio."""
        starts = [self.start_sample(window) for window in range(self.num_windows)]
        needed = starts[-1] + self.window_samples
        padded = torch.nn.functional.pad(waveform, (0, max(0, needed - waveform.shape[0])))
        return torch.stack([padded[start : start + self.window_samples] for start in starts])


class EmageMotionGenerator:
    """Audio -> SMPL-X motion with the EMAGE networks. Call with a float32 mono 16 kHz waveform."""

    def __init__(
        self,
        config: EmageConfig,
        audio_model: EmageAudioModel,
        motion_decoder: EmageMotionDecoder,
        device: str | torch.device = "cpu",
        audio_batch_windows: int = DEFAULT_AUDIO_BATCH_WINDOWS,
    ) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.audio_model = audio_model.to(self.device).eval()
        self.motion_decoder = motion_decoder.to(self.device).eval()
        self.audio_batch_windows = audio_batch_windows

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> "EmageMotionGenerator":
        """Load the official H-Liu1997/emage_audio folder (see emage_checkpoint for the layout)."""
        config, audio_model, motion_decoder = load_emage(checkpoint_dir)
        return cls(config, audio_model, motion_decoder, device)

    @classmethod
    def random_init(
        cls, config_dir: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> "EmageMotionGenerator":
        """Random weights at the size given by the config.json files in ``config_dir`` (weights there
        are not read), or at the official size (~139 M parameters) when None. For benchmarks."""
        config = EmageConfig() if config_dir is None else read_emage_config(config_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            audio_model, motion_decoder = EmageAudioModel(config.audio), EmageMotionDecoder(config)
        return cls(config, audio_model, motion_decoder, device)

    @property
    def sample_rate(self) -> int:
        return self.config.audio.audio_sr

    @property
    def fps(self) -> int:
        return self.config.audio.pose_fps

    def plan(self, num_samples: int) -> AudioWindowPlan:
        audio = self.config.audio
        return AudioWindowPlan(
            num_frames=round_half_up_ratio(num_samples * audio.pose_fps, audio.audio_sr),
            window_frames=audio.pose_length,
            seed_frames=audio.seed_frames,
            sample_rate=audio.audio_sr,
            fps=audio.pose_fps,
        )

    def __call__(self, waveform: np.ndarray) -> SmplxMotion:
        """(samples,) float mono waveform at ``sample_rate`` -> motion of round(duration * fps) frames."""
        waveform = np.asarray(waveform)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono waveform of shape (samples,), got shape {waveform.shape}")
        if not np.isfinite(waveform).all():
            raise ValueError("the waveform holds NaN or infinite samples")
        plan = self.plan(waveform.shape[0])
        if plan.num_frames == 0:
            return SmplxMotion.still(0, fps=self.fps)
        audio = torch.from_numpy(waveform.astype(np.float32)).to(self.device)
        with torch.inference_mode():
            poses, expressions, trans = self.generate(audio, plan)
        return SmplxMotion(
            poses=poses.reshape(plan.num_frames, -1).cpu().numpy(),
            expressions=expressions.cpu().numpy(),
            trans=trans.cpu().numpy(),
            betas=np.zeros(NUM_BETAS, np.float32),
            fps=self.fps,
        )

    def encode_audio(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(windows, samples) -> face and body features (windows, pose_length, audio_f), in chunks."""
        chunks = [self.audio_model.encode_audio(chunk) for chunk in windows.split(self.audio_batch_windows)]
        face, body = zip(*chunks)
        return torch.cat(face), torch.cat(body)

    def select(self, outputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Per part: argmax codebook indices (batch, frames) or latents (batch, frames, dim), as the
        config says."""
        audio = self.config.audio
        return {
            part: logits.argmax(-1) if audio.decodes_from_classifier(part) else latent
            for part, (latent, logits) in outputs.items()
        }

    def initial_seed(self) -> torch.Tensor:
        """(1, seed_frames, 337): the rest pose (identity rotations), no translation or contact."""
        audio = self.config.audio
        joints = audio.pose_dims // 6
        rest = axis_angle_to_rot6d(torch.zeros(audio.seed_frames, joints, 3, device=self.device))
        extras = torch.zeros(audio.seed_frames, SEED_EXTRA_FEATURES, device=self.device)
        return torch.cat([rest.reshape(audio.seed_frames, -1), extras], dim=-1)[None]

    def generate(self, audio: torch.Tensor, plan: AudioWindowPlan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(samples,) -> poses (T, 55, 3), expressions (T, 100), trans (T, 3), T = plan.num_frames."""
        face_audio, body_audio = self.encode_audio(plan.audio_windows(audio))
        seed = self.initial_seed()
        kept: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}
        for window in range(plan.num_windows):
            outputs = self.audio_model(face_audio[window : window + 1], body_audio[window : window + 1], seed)
            predictions = self.select(outputs)
            last = window == plan.num_windows - 1
            for part in PARTS:
                # A window's last seed_frames frames are predicted again by the next window.
                kept[part].append(predictions[part] if last else predictions[part][:, : plan.step])
            if not last:
                seed = self.motion_decoder.decode(predictions).seed_features[:, -plan.seed_frames :]
        # The conv decoders run over the whole clip at once, as in the official inference, so
        # window borders leave no seams.
        motion = self.motion_decoder.decode({part: torch.cat(kept[part], dim=1) for part in PARTS})
        trans = self.motion_decoder.translation(motion.lower_features)
        frames = plan.num_frames
        return motion.axis_angle[0, :frames], motion.expressions[0, :frames], trans[0, :frames]
