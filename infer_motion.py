"""Audio folder -> SMPL-X motion, DWPose keypoints and (optionally) skeleton videos.

    python infer_motion.py --audio_folder DIR --save_folder DIR [--visualization] [--ckpt DIR]
        [--smplx_dir DIR] [--model emage|procedural] [--device cpu|cuda|auto] [--config YAML] [key=value ...]

Every audio file (wav, mp3, flac, m4a, ogg) in DIR becomes, in the save folder:
  <name>_output.npz     SMPL-X motion in the BEAT format (iasa.motion.motion_file)
  <name>_keypoints.npz  DWPose keypoints (iasa.pose.keypoints)
  <name>_skeleton.mp4   with --visualization: the pose video (pose.style, as the pose guider sees it) with the audio
A file that cannot be read is reported and skipped; the others finish and the exit code is then 1.
Outputs are written to temporary files and renamed, so nothing half-written is left behind: Ctrl-C and
SIGTERM remove the outputs of the file being written (SIGTERM stops at the next video frame or step), and the
temporaries of a run that was killed (SIGKILL) are removed when the next run starts.
Config keys (InferMotionConfig below; e.g. pose.image_height=512 procedural.seed=3) come from --config
and key=value overrides.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from iasa.atomic_io import OUTPUT_FILE_MODE, remove_stale_temporaries, temporary_prefix
from iasa.config import ConfigError, check, load_config, split_config_args
from iasa.motion.audio import AUDIO_EXTENSIONS, AudioFileError, load_audio
from iasa.motion.motion_file import SmplxMotion
from iasa.motion.procedural import ProceduralMotionConfig, ProceduralMotionGenerator
from iasa.pose.config import PoseConfig
from iasa.pose.keypoints import KeypointFileError, WholeBodyKeypoints
from iasa.pose.style import PoseStyleError, resolve_pose_style

SAMPLE_RATE = 16000
EXIT_OK, EXIT_SOME_FILES_FAILED, EXIT_USAGE = 0, 1, 2
# A run stopped by a signal exits with 128 + its number, as the shell reports it.
EXIT_SIGNAL_BASE = 128
EMAGE_HINT = (
    "download the EMAGE weights with `git lfs install && git clone https://huggingface.co/H-Liu1997/emage_audio` "
    "and pass --ckpt emage_audio"
)
SMPLX_HINT = (
    "for the SMPL-X body, register at https://smpl-x.is.tue.mpg.de and put SMPLX_NEUTRAL_2020.npz under "
    "<dir>/smplx/, then pass --smplx_dir <dir> (without it the built-in skeleton is drawn)"
)

MotionGenerator = Callable[[np.ndarray], SmplxMotion]


@dataclass
class InferMotionConfig:
    pose: PoseConfig = field(default_factory=PoseConfig)
    procedural: ProceduralMotionConfig = field(default_factory=ProceduralMotionConfig)
    # Keypoint file (.npz, iasa.pose.keypoints) of the reference image; the skeleton is aligned to it.
    reference_keypoints: str = ""
    # Audio shorter than this (seconds) or quieter than this (peak, dB full scale) gets a warning.
    short_audio_s: float = 0.5
    silent_peak_dbfs: float = -50.0
    # x264 constant rate factor of the skeleton video (lower = larger, sharper).
    video_crf: int = 18

    def validate(self) -> None:
        check(self.short_audio_s >= 0, "short_audio_s", self.short_audio_s, "must be >= 0 seconds")
        check(0 <= self.video_crf <= 51, "video_crf", self.video_crf, "must be in [0, 51] (x264)")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="key=value arguments override InferMotionConfig keys, e.g. pose.image_height=512 procedural.seed=3 "
        "reference_keypoints=ref_keypoints.npz (align the skeleton to a reference image's DWPose keypoints)",
    )
    parser.add_argument("--audio_folder", required=True, type=Path, help="folder of wav/mp3/flac/m4a/ogg files")
    parser.add_argument("--save_folder", required=True, type=Path, help="where the outputs go (created)")
    parser.add_argument("--visualization", action="store_true", help="also write <name>_skeleton.mp4 with audio")
    parser.add_argument("--ckpt", type=Path, help="EMAGE checkpoint folder (Hugging Face H-Liu1997/emage_audio)")
    parser.add_argument("--smplx_dir", type=Path, help="folder with smplx/SMPLX_NEUTRAL_2020.npz")
    parser.add_argument("--model", choices=("emage", "procedural"), help="default: emage when --ckpt is given")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    parser.add_argument("--config", type=Path, help="YAML file of InferMotionConfig keys")
    return parser.parse_args(rest), overrides


def build_generator(args: argparse.Namespace, config: InferMotionConfig) -> MotionGenerator:
    """The motion model the flags ask for; a missing checkpoint is a SystemExit naming what to download."""
    model = args.model or ("emage" if args.ckpt else None)
    if model is None:
        raise SystemExit(
            "error: no motion model chosen and no EMAGE checkpoint given.\n"
            f"  - for EMAGE: {EMAGE_HINT};\n  - {SMPLX_HINT};\n"
            "  - or run the built-in procedural motion, which needs no downloads: --model procedural"
        )
    if model == "procedural":
        return ProceduralMotionGenerator(config.procedural)
    if args.ckpt is None or not args.ckpt.is_dir():
        where = f"checkpoint folder {args.ckpt} does not exist" if args.ckpt else "--model emage needs --ckpt"
        raise SystemExit(f"error: {where}: {EMAGE_HINT} (or use --model procedural)")
    try:
        from iasa.motion.emage_inference import EmageMotionGenerator
    except ImportError as error:
        raise SystemExit(f"error: the EMAGE model code could not be imported ({error}); use --model procedural") from error
    try:
        return EmageMotionGenerator.from_pretrained(args.ckpt, resolve_device(args.device))
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: cannot load EMAGE from {args.ckpt}: {error}") from error


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def find_audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"error: audio folder {folder} does not exist")
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise SystemExit(f"error: no {'/'.join(ext[1:] for ext in AUDIO_EXTENSIONS)} files in {folder}")
    return files


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """Output name of each audio file: its stem, or stem_extension where two files share a stem."""
    stems = [path.stem for path in files]
    return {path: path.stem if stems.count(path.stem) == 1 else f"{path.stem}_{path.suffix[1:]}" for path in files}


def output_paths(save_folder: Path, name: str) -> list[Path]:
    """The motion, keypoint and skeleton-video files of output `name`."""
    return [save_folder / f"{name}{ending}" for ending in ("_output.npz", "_keypoints.npz", "_skeleton.mp4")]


def audio_warnings(name: str, waveform: np.ndarray, config: InferMotionConfig) -> list[str]:
    duration = len(waveform) / SAMPLE_RATE
    messages = []
    if duration < config.short_audio_s:
        messages.append(f"{name}: very short audio ({duration:.2f} s); the motion is {duration:.2f} s of mostly idle motion")
    peak_dbfs = 20 * np.log10(max(float(np.abs(waveform).max()), 1e-10))
    if peak_dbfs < config.silent_peak_dbfs:
        messages.append(f"{name}: the audio is silent (peak {peak_dbfs:.0f} dBFS); the motion is idle")
    return messages


def write_skeleton_video(
    keypoints: WholeBodyKeypoints, style: str, fps: float, audio: Path, path: Path, crf: int, stop: StopRequest
) -> None:
    """Draw the pose images in ``style`` into an H.264 mp4 and mux ``audio`` in, via temporary files."""
    import imageio.v2 as imageio
    import imageio_ffmpeg

    from iasa.pose.drawing import iter_pose_frames

    descriptor, silent_video = tempfile.mkstemp(suffix=".mp4", dir=path.parent, prefix=f"{temporary_prefix(path)}video-")
    os.close(descriptor)
    descriptor, muxed = tempfile.mkstemp(suffix=".mp4", dir=path.parent, prefix=temporary_prefix(path))
    os.close(descriptor)
    try:
        writer = imageio.get_writer(
            silent_video, format="FFMPEG", fps=fps, codec="libx264", quality=None, pixelformat="yuv420p",
            macro_block_size=2, ffmpeg_params=["-crf", str(crf)], ffmpeg_log_level="error",
        )  # fmt: skip
        # Not `with writer`: imageio's __exit__ skips close() on an error, which leaves ffmpeg running to
        # create the silent video again after the finally below has removed it.
        with closing(writer):
            for frame in iter_pose_frames(keypoints, style):
                stop.raise_if_requested()
                writer.append_data(frame)
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-i", silent_video, "-i", str(audio),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", muxed,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not mux {audio} into {path}: {result.stderr.decode(errors='replace').strip()}")
        os.chmod(muxed, OUTPUT_FILE_MODE)  # mkstemp creates 0600
        os.replace(muxed, path)
    finally:
        Path(silent_video).unlink(missing_ok=True)
        Path(muxed).unlink(missing_ok=True)


def process_file(
    audio: Path, name: str, generator: MotionGenerator, args: argparse.Namespace, config: InferMotionConfig,
    reference: WholeBodyKeypoints | None, stop: StopRequest,
) -> list[str]:  # fmt: skip
    """Write the outputs of one audio file; returns warnings. If any step fails, or a stop is requested before
    the file is finished, the outputs of this file that were already written are removed, so a file has either
    all its outputs or none."""
    from iasa.pose.pipeline import motion_to_keypoints

    waveform = load_audio(audio, SAMPLE_RATE)
    messages = audio_warnings(audio.name, waveform, config)
    motion = generator(waveform)
    stop.raise_if_requested()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keypoints = motion_to_keypoints(motion, config.pose, args.smplx_dir, reference)
    messages += [f"{audio.name}: {warning.message}" for warning in caught]
    stop.raise_if_requested()
    outputs = output_paths(args.save_folder, name)[: 3 if args.visualization else 2]
    try:
        motion.save(outputs[0])
        keypoints.save(outputs[1])
        if args.visualization:
            write_skeleton_video(keypoints, config.pose.style, motion.fps, audio, outputs[2], config.video_crf, stop)
        stop.raise_if_requested()  # a signal during the last write (the mux) still discards this file
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    return messages


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal; unwinds like Ctrl-C, so every file being written is removed."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class StopRequest:
    """A stop asked for by a signal: the handler records it and the loop raises Interrupted at safe points.

    A handler that raised would raise inside whatever code the signal interrupts, and there (a __del__, such as
    imageio's writer closing ffmpeg, or library code that catches everything) the exception can be dropped
    and the run goes on."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    def record(self, signal_number: int, frame) -> None:
        self.signal_number = signal_number

    def raise_if_requested(self) -> None:
        if self.signal_number is not None:
            raise Interrupted(self.signal_number)


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(InferMotionConfig, args.config, overrides)
        # No video model here: "auto" draws what UniAnimate's checkpoint was trained on.
        config.pose = replace(config.pose, style=resolve_pose_style(config.pose.style, None, "infer_motion.py"))
    except (ConfigError, PoseStyleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.save_folder.exists() and not args.save_folder.is_dir():
        print(f"error: --save_folder {args.save_folder} is a file; pass a folder (it is created)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.smplx_dir is None and config.pose.smplx_dir:
            args.smplx_dir = Path(config.pose.smplx_dir)
        if args.smplx_dir is not None:
            from iasa.pose.smplx_model import SMPLX_DOWNLOAD_HINT, smplx_model_file

            if not smplx_model_file(args.smplx_dir).is_file():
                raise SystemExit(f"error: {smplx_model_file(args.smplx_dir)} not found: {SMPLX_DOWNLOAD_HINT}")
        reference = WholeBodyKeypoints.load(config.reference_keypoints) if config.reference_keypoints else None
        files = find_audio_files(args.audio_folder)
        generator = build_generator(args, config)
    except KeypointFileError as error:
        print(f"error: reference keypoints: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    if args.smplx_dir is None:
        print("note: drawing the built-in skeleton (iasa/pose/skeleton.py); " + SMPLX_HINT, file=sys.stderr)

    args.save_folder.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    for name in names.values():  # left by an earlier run that was killed
        for path in output_paths(args.save_folder, name):
            remove_stale_temporaries(path)
    stop = StopRequest()
    # Installed until main returns, so a second SIGTERM while the run unwinds is recorded, not a traceback.
    previous = signal.signal(signal.SIGTERM, stop.record)
    failed: list[str] = []
    try:
        for audio in tqdm(files, desc="audio -> motion", unit="file"):
            stop.raise_if_requested()
            try:
                for message in process_file(audio, names[audio], generator, args, config, reference, stop):
                    tqdm.write(f"warning: {message}", file=sys.stderr)
            except AudioFileError as error:
                failed.append(audio.name)
                tqdm.write(f"skipped: {error}", file=sys.stderr)
            except Exception as error:  # one bad file must not stop the others
                failed.append(audio.name)
                tqdm.write(f"failed: {audio}: {type(error).__name__}: {error}", file=sys.stderr)
    except KeyboardInterrupt as stop:
        number = stop.signal_number if isinstance(stop, Interrupted) else signal.SIGINT
        print(f"\ninterrupted ({signal.Signals(number).name}); files finished so far are in {args.save_folder}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + number
    finally:
        signal.signal(signal.SIGTERM, previous)
    done = len(files) - len(failed)
    print(f"{done} of {len(files)} audio files written to {args.save_folder}", file=sys.stderr)
    if failed:
        print(f"not processed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_SOME_FILES_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
