"""A synthetic talking-avatar dataset: speech -> procedural motion -> keypoints -> cartoon video.

Every clip is a pure function of its ClipSpec (identity seed, motion seed, tempo, pitch, gesture style)
and the dataset config, and every spec comes from one seed, so a dataset is reproducible bit for bit
(keypoints, audio, rendered frames, and the lossless mp4, encoded on one thread) with the same numpy,
OpenCV and ffmpeg builds. Two splits: train, and heldout with identities and motion seeds that train
never uses.

Layout of one split folder (what iasa.train.dataset reads, plus the synthetic extras):
    videos/<clip>.mp4          `frames` frames of size x size: RGB H.264 (codec "x264rgb", lossless at crf 0, the
                               default; needs imageio-ffmpeg) or FFV1 (codec "ffv1", lossless, written by OpenCV's
                               own FFmpeg: for machines without an ffmpeg binary)
    keypoints/<clip>.npz       WholeBodyKeypoints of every frame (the motion the video shows)
    audio/<clip>.wav           the 16 kHz speech that drove the motion
    prompts/<clip>.txt         a description of the person
    identities/<id>.png        the person in the neutral rest pose (a reference image for generate.py)
    identities/<id>.npz        its keypoints (reference_keypoints= for generate.py)
    manifest.json              clip -> identity, seeds, tempo, style; identity -> seed, framing, prompt
Clip names are <identity>_<index>; the ground truth of any motion of a clip's person is
``render_avatar(keypoints, Identity.sample(identity_seed))``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile

from iasa.atomic_io import atomic_output, write_json
from iasa.errors import InputError
from iasa.motion.procedural import ProceduralMotionConfig, ProceduralMotionGenerator
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import WholeBodyKeypoints
from iasa.pose.pipeline import motion_to_keypoints
from iasa.synthetic.avatar import render_avatar
from iasa.synthetic.gestures import GESTURE_STYLES, motion_config
from iasa.synthetic.identity import Identity
from iasa.synthetic.speech import SAMPLE_RATE, SpeechConfig, synthesize_speech

SPLITS = ("train", "heldout")
VIDEO_CODECS = ("x264rgb", "ffv1")
# Identity and motion seeds of the two splits come from disjoint ranges, so held-out is unseen by construction.
SEED_RANGES = {"train": (0, 2**30), "heldout": (2**30, 2**31)}
MANIFEST = "manifest.json"


class SyntheticDatasetError(InputError, ValueError):
    """A dataset request that cannot be written (bad sizes, an output folder already in use)."""


@dataclass
class SyntheticDatasetConfig:
    seed: int = 0
    train_clips: int = 256
    heldout_clips: int = 32
    identities_train: int = 24
    identities_heldout: int = 8
    # Video frames per clip (4n + 1, as the Wan VAE needs) at fps; square frames of size pixels.
    frames: int = 49
    size: int = 256
    fps: float = 30.0
    # Speech tempo (syllables per second) and voice pitch (Hz) are drawn per clip from these ranges.
    tempo_range: tuple[float, float] = (2.5, 6.0)
    pitch_range_hz: tuple[float, float] = (90.0, 240.0)
    # Upper-body framing (iasa.pose.config.PoseConfig), each identity scaled by up to +-framing_jitter.
    framed_height_m: float = 0.8
    frame_center_above_pelvis_m: float = 0.38
    framing_jitter: float = 0.08
    # x264 constant rate factor of the RGB-coded mp4: 0 is lossless (about 0.7 MB a clip at the defaults);
    # 18 gives about 50 dB PSNR at half the size.
    crf: int = 0
    # "x264rgb" (ffmpeg through imageio-ffmpeg, crf above) or "ffv1" (lossless, OpenCV alone; crf unused).
    codec: str = "x264rgb"


@dataclass(frozen=True)
class IdentitySpec:
    name: str
    seed: int
    framed_height_m: float
    frame_center_above_pelvis_m: float

    def pose_config(self, size: int) -> PoseConfig:
        return PoseConfig(
            image_height=size, image_width=size, framed_height_m=self.framed_height_m,
            frame_center_above_pelvis_m=self.frame_center_above_pelvis_m,
        )  # fmt: skip


@dataclass(frozen=True)
class ClipSpec:
    name: str
    identity: IdentitySpec
    motion_seed: int
    tempo: float
    pitch_hz: float
    style: str


def plan_split(config: SyntheticDatasetConfig, split: str) -> tuple[list[IdentitySpec], list[ClipSpec]]:
    """The identities and clips of ``split``, a function of (config.seed, split) and the sizes."""
    clips, identities = {
        "train": (config.train_clips, config.identities_train),
        "heldout": (config.heldout_clips, config.identities_heldout),
    }[split]
    if clips < 0 or identities < 1 and clips > 0:
        raise SyntheticDatasetError(f"{split}: {clips} clips need at least one identity (--identities_{split})")
    rng = np.random.default_rng([config.seed, SPLITS.index(split)])
    low, high = SEED_RANGES[split]
    identity_seeds = rng.choice(high - low, size=identities, replace=False) + low
    motion_seeds = rng.choice(high - low, size=clips, replace=False) + low
    first = 0 if split == "train" else config.identities_train  # identity names are unique across splits
    people = [
        IdentitySpec(
            name=f"person{first + index:03d}", seed=int(seed),
            framed_height_m=config.framed_height_m * float(1 + rng.uniform(-1, 1) * config.framing_jitter),
            frame_center_above_pelvis_m=config.frame_center_above_pelvis_m,
        )
        for index, seed in enumerate(identity_seeds)
    ]  # fmt: skip
    styles = list(GESTURE_STYLES)
    specs = []
    for index, seed in enumerate(motion_seeds):
        person = people[index % len(people)]
        specs.append(
            ClipSpec(
                name=f"{person.name}_{index:04d}", identity=person, motion_seed=int(seed),
                tempo=round(float(rng.uniform(*config.tempo_range)), 3),
                pitch_hz=round(float(rng.uniform(*config.pitch_range_hz)), 1),
                style=styles[int(rng.integers(len(styles)))],
            )
        )  # fmt: skip
    return people, specs


def clip_audio(spec: ClipSpec, config: SyntheticDatasetConfig) -> np.ndarray:
    """(N,) float32 16 kHz speech of the clip, exactly long enough for config.frames video frames."""
    voice = SpeechConfig(tempo=spec.tempo, pitch_hz=spec.pitch_hz)
    return synthesize_speech(config.frames / config.fps, spec.motion_seed, voice)


def clip_keypoints(spec: ClipSpec, waveform: np.ndarray, config: SyntheticDatasetConfig) -> WholeBodyKeypoints:
    motion_settings = motion_config(spec.style, spec.motion_seed)
    motion_settings.fps = config.fps
    motion = ProceduralMotionGenerator(motion_settings)(waveform)
    keypoints = motion_to_keypoints(motion, spec.identity.pose_config(config.size))
    if keypoints.num_frames != config.frames:
        raise AssertionError(f"{spec.name}: {keypoints.num_frames} motion frames for {config.frames} video frames")
    return keypoints


def reference_keypoints(identity: IdentitySpec, config: SyntheticDatasetConfig) -> WholeBodyKeypoints:
    """One frame of the rest talking pose (no sway, mouth closed, eyes open) in the identity's framing."""
    silence = np.zeros(int(round(SAMPLE_RATE / config.fps)), np.float32)
    motion = ProceduralMotionGenerator(ProceduralMotionConfig(seed=identity.seed, fps=config.fps, sway_rad=0.0))(silence)
    return motion_to_keypoints(motion, identity.pose_config(config.size))


def write_clip(split_dir: Path, spec: ClipSpec, config: SyntheticDatasetConfig) -> None:
    """Write the clip's keypoints, audio, prompt and (last, so a listed video is a finished clip) video."""
    identity = Identity.sample(spec.identity.seed)
    waveform = clip_audio(spec, config)
    keypoints = clip_keypoints(spec, waveform, config)
    keypoints.save(split_dir / "keypoints" / f"{spec.name}.npz")
    write_wav(split_dir / "audio" / f"{spec.name}.wav", waveform)
    with atomic_output(split_dir / "prompts" / f"{spec.name}.txt") as temporary:
        temporary.write_text(identity.describe() + "\n")
    frames = render_avatar(keypoints, identity)
    if config.codec == "ffv1":
        write_ffv1_mp4(split_dir / "videos" / f"{spec.name}.mp4", frames, config.fps)
    else:
        write_mp4(split_dir / "videos" / f"{spec.name}.mp4", frames, config.fps, config.crf)


def write_identity(split_dir: Path, person: IdentitySpec, config: SyntheticDatasetConfig) -> None:
    keypoints = reference_keypoints(person, config)
    keypoints.save(split_dir / "identities" / f"{person.name}.npz")
    image = render_avatar(keypoints, Identity.sample(person.seed))[0]
    with atomic_output(split_dir / "identities" / f"{person.name}.png") as temporary:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {temporary}")


def write_manifest(
    split_dir: Path, split: str, people: list[IdentitySpec], clips: list[ClipSpec], config: SyntheticDatasetConfig
) -> None:
    identities = {}
    for person in people:
        look = Identity.sample(person.seed)
        identities[person.name] = {
            "seed": person.seed, "framed_height_m": person.framed_height_m,
            "frame_center_above_pelvis_m": person.frame_center_above_pelvis_m, "prompt": look.describe(),
            "hair_style": look.hair_style, "sleeves": look.sleeves, "neckline": look.neckline,
        }  # fmt: skip
    write_json(
        split_dir / MANIFEST,
        {
            "split": split, "config": asdict(config), "identities": identities,
            "clips": {
                clip.name: {
                    "identity": clip.identity.name, "identity_seed": clip.identity.seed, "motion_seed": clip.motion_seed,
                    "tempo": clip.tempo, "pitch_hz": clip.pitch_hz, "style": clip.style,
                }
                for clip in clips
            },
        },
    )  # fmt: skip


def identity_of_clip(split_dir: str | Path, name: str) -> Identity:
    """The Identity of clip ``name`` of a split written by this module (to render its ground truth)."""
    path = Path(split_dir) / MANIFEST
    if not path.is_file():
        raise SyntheticDatasetError(f"{path} does not exist; write the split with scripts/make_synthetic_dataset.py")
    clips = json.loads(path.read_text())["clips"]
    if name not in clips:
        raise SyntheticDatasetError(f"{path} lists no clip '{name}'")
    return Identity.sample(clips[name]["identity_seed"])


def write_wav(path: Path, waveform: np.ndarray) -> None:
    with atomic_output(path) as temporary:
        soundfile.write(temporary, waveform, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int) -> None:
    """frames (F, H, W, 3) uint8 RGB -> H.264 mp4 coded in RGB (libx264rgb), lossless at crf 0: OpenCV
    (iasa.train.dataset) and ffmpeg decode the exact rendered frames. (4:2:0 YUV, the usual mp4, smears
    the cartoon's colour edges to about 39 dB PSNR.) One encoder thread makes the bytes independent of
    the machine's core count."""
    import imageio_ffmpeg

    _, height, width, _ = frames.shape
    with atomic_output(path) as temporary:
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-", "-c:v", "libx264rgb", "-preset", "ultrafast",
            "-crf", str(crf), "-threads", "1", str(temporary),
        ]  # fmt: skip
        result = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {result.stderr.decode(errors='replace').strip()[-500:]}")


def write_ffv1_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """frames (F, H, W, 3) uint8 RGB -> lossless FFV1 in an mp4 container through OpenCV's bundled FFmpeg (no
    ffmpeg binary needed); cv2.VideoCapture decodes the exact frames."""
    _, height, width, _ = frames.shape
    with atomic_output(path) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write FFV1 video to {path}; use codec x264rgb (needs imageio-ffmpeg)")
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
