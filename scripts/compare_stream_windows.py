"""A long stream against the overlapping-window long video, on a held-out synthetic clip (the miniature model).

    python scripts/compare_stream_windows.py --config config/stream_iasa.yaml --split-dir data/synthetic/heldout \
        --clip person024_0003 --seconds 60 model.model_size=mini model.lora_path=... [key=value ...]

The clip's motion (its seed, tempo, voice and gesture style from the split's manifest) is regenerated for
--seconds of speech, and its ground truth rendered from the keypoints (iasa.synthetic.avatar), so any length
can be compared. The same model (the stream config's model, attention, sampler and speed keys) then makes the
video twice: streamed (iasa.video.stream_run.stream_clip_frames: chunks with the bounded pose-selected cache) and
as the overlapping-window long video (VideoGenerator.generate: 1 step, no cfg, windows of
--window-latent-frames fused over --overlap-latent-frames). Per variant: PSNR against the ground truth over the
whole video, over the first and the last --drift-seconds, and the drift (first minus last, dB; > 0 = worse at
the end). JSON to --out (atomic).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.config import load_config, split_config_args  # noqa: E402
from iasa.errors import InputError  # noqa: E402
from iasa.video.config import LongVideoConfig, SamplerConfig  # noqa: E402
from iasa.video.stream_run import StreamInferenceConfig, stream_clip_frames  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "stream_vs_windows.json"


class ClipNotFoundError(InputError, ValueError):
    pass


def held_out_clip(split_dir: Path, name: str, seconds: float):
    """(keypoints of a 4n + 1-frame clip, ground-truth frames (F, H, W, 3), reference image, reference
    keypoints, fps) of clip `name`, regenerated for `seconds` of speech."""
    from iasa.pose.keypoints import WholeBodyKeypoints
    from iasa.synthetic.avatar import render_avatar
    from iasa.synthetic.dataset import MANIFEST, SyntheticDatasetConfig, clip_audio, clip_keypoints, plan_split
    from iasa.synthetic.identity import Identity
    from iasa.video.inference import load_reference_image
    from iasa.video.latent_grid import padded_frame_count

    manifest_path = split_dir / MANIFEST
    if not manifest_path.is_file():
        raise ClipNotFoundError(f"{manifest_path} does not exist; write the split with scripts/make_synthetic_dataset.py")
    manifest = json.loads(manifest_path.read_text())
    fields = {f.name for f in dataclasses.fields(SyntheticDatasetConfig)}
    settings = {key: tuple(value) if isinstance(value, list) else value for key, value in manifest["config"].items() if key in fields}
    config = SyntheticDatasetConfig(**settings)
    specs = {spec.name: spec for spec in plan_split(config, manifest["split"])[1]}
    if name not in specs:
        raise ClipNotFoundError(f"{manifest_path} lists no clip {name!r}; pick one of {sorted(specs)[:5]}...")
    spec = specs[name]
    config = dataclasses.replace(config, frames=padded_frame_count(int(round(seconds * config.fps))))
    keypoints = clip_keypoints(spec, clip_audio(spec, config), config)
    truth = render_avatar(keypoints, Identity.sample(spec.identity.seed))
    image, _ = load_reference_image(split_dir / "identities" / f"{spec.identity.name}.png", keypoints.image_size)
    reference = WholeBodyKeypoints.load(split_dir / "identities" / f"{spec.identity.name}.npz")
    return keypoints, truth, image, reference, config.fps


def scores(video: np.ndarray, truth: np.ndarray, fps: float, drift_seconds: float) -> dict[str, float]:
    from iasa.eval.video_metrics import psnr

    window = max(1, int(round(drift_seconds * fps)))
    first, last = psnr(video[:window], truth[:window]), psnr(video[-window:], truth[-window:])
    return {"psnr": psnr(video, truth), "psnr_first": first, "psnr_last": last, "drift_db": first - last}


def main(argv: list[str]) -> None:
    from iasa.pose import draw_pose_frames
    from iasa.video.inference import inference_pose_style
    from iasa.video.pipeline import VideoGenerator

    overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="stream config (config/stream_iasa.yaml) with the model")
    parser.add_argument("--split-dir", type=Path, required=True, help="a split written by make_synthetic_dataset.py")
    parser.add_argument("--clip", required=True, help="a clip name of that split (its manifest.json)")
    parser.add_argument("--seconds", type=float, default=60.0, help="video length to compare")
    parser.add_argument("--drift-seconds", type=float, default=10.0, help="the first and last stretch compared for drift")
    parser.add_argument("--window-latent-frames", type=int, default=LongVideoConfig.window_latent_frames)
    parser.add_argument("--overlap-latent-frames", type=int, default=LongVideoConfig.overlap_latent_frames)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(rest)
    config = load_config(StreamInferenceConfig, args.config, overrides)
    keypoints, truth, image, reference, fps = held_out_clip(args.split_dir, args.clip, args.seconds)
    size = keypoints.image_size
    if (config.pose.image_height, config.pose.image_width) != tuple(size):
        raise InputError(f"the clip is {size[0]}x{size[1]}: pass pose.image_height={size[0]} pose.image_width={size[1]}")
    pose_style = inference_pose_style(config.pose.style, config.model)
    reference_pose = draw_pose_frames(reference.slice_frames(0, 1), pose_style)[0]
    long_video = LongVideoConfig(args.window_latent_frames, args.overlap_latent_frames)
    generator = VideoGenerator.from_config(config.model, config.attention, long_video, config.speed.for_generator())
    progress = not args.no_progress
    frames = keypoints.num_frames
    streamed = np.concatenate(list(stream_clip_frames(generator, config, image, reference_pose, keypoints, pose_style, progress)))
    sampler = SamplerConfig(num_steps=1, cfg_scale=1.0, shift=config.sampler.shift, seed=config.sampler.seed, prompt=config.sampler.prompt)
    pose_video = draw_pose_frames(keypoints, pose_style)
    windowed = generator.generate(image, pose_video, reference_pose, keypoints, sampler, progress=progress)
    results = {
        "clip": args.clip, "seconds": frames / fps, "fps": fps, "frames": frames, "drift_seconds": args.drift_seconds,
        "config": str(args.config), "overrides": overrides,
        "stream": {**scores(streamed, truth, fps, args.drift_seconds), "chunk_latent_frames": config.streaming.chunk_latent_frames,
                   "cache_frames": config.streaming.cache_frames},
        "windows": {**scores(windowed, truth, fps, args.drift_seconds), "window_latent_frames": args.window_latent_frames,
                    "overlap_latent_frames": args.overlap_latent_frames},
    }  # fmt: skip
    write_json(args.out, results)
    print(json.dumps({key: results[key] for key in ("stream", "windows")}, indent=2))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
