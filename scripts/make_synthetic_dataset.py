"""Write a synthetic talking-avatar dataset (train + held-out split) that the training stages read.

    python scripts/make_synthetic_dataset.py --out data/synthetic [--seed 0] [--train_clips 256]
        [--heldout_clips 32] [--identities_train 24] [--identities_heldout 8] [--frames 49] [--size 256]
        [--workers N] [--preview preview.png]

Each clip: speech-like audio made from a seed -> procedural talking motion (a gesture style) -> DWPose
keypoints -> a cartoon person drawn from the keypoints (iasa.synthetic). Writes OUT/train and
OUT/heldout in the layout of iasa.synthetic.dataset (videos/, keypoints/, audio/, prompts/, identities/,
manifest.json); held-out identities and motion seeds never occur in train. The same arguments give the
same data (bit for bit with the same numpy, OpenCV and ffmpeg). --preview writes a contact sheet of a
few identities over time, the last column the pose image drawn over the video.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import atomic_output  # noqa: E402
from iasa.errors import InputError  # noqa: E402
from iasa.pose.drawing import draw_pose_frames  # noqa: E402
from iasa.synthetic.avatar import render_avatar  # noqa: E402
from iasa.synthetic.dataset import (  # noqa: E402
    SPLITS,
    ClipSpec,
    SyntheticDatasetConfig,
    VIDEO_CODECS,
    SyntheticDatasetError,
    clip_audio,
    clip_keypoints,
    plan_split,
    write_clip,
    write_identity,
    write_manifest,
)
from iasa.synthetic.identity import Identity  # noqa: E402
from iasa.video.latent_grid import TEMPORAL_STRIDE, TOKEN_STRIDE  # noqa: E402

PREVIEW_PEOPLE = {"train": 4, "heldout": 2}
PREVIEW_COLUMNS = 5


def parse_config(argv: list[str]) -> tuple[SyntheticDatasetConfig, argparse.Namespace]:
    defaults = SyntheticDatasetConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="dataset folder; OUT/train and OUT/heldout are written")
    for name in ("seed", "train_clips", "heldout_clips", "identities_train", "identities_heldout", "frames", "size", "crf"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    parser.add_argument("--codec", choices=VIDEO_CODECS, default=defaults.codec,
                        help="x264rgb: lossless H.264 through imageio-ffmpeg; ffv1: lossless FFV1 through OpenCV alone")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes rendering clips in parallel")
    parser.add_argument("--preview", type=Path, default=None, help="write a PNG contact sheet here")
    args = parser.parse_args(argv)
    known = {field.name for field in fields(SyntheticDatasetConfig)}
    config = SyntheticDatasetConfig(**{key: value for key, value in vars(args).items() if key in known})
    if config.frames < TEMPORAL_STRIDE + 1 or (config.frames - 1) % TEMPORAL_STRIDE:
        raise SyntheticDatasetError(f"--frames {config.frames}: use 4n + 1 frames (33, 49, 81), as the Wan VAE needs")
    if args.workers < 1:
        raise SyntheticDatasetError(f"--workers {args.workers}: use at least 1")
    if config.size < 4 * TOKEN_STRIDE or config.size % TOKEN_STRIDE:
        raise SyntheticDatasetError(f"--size {config.size}: use a multiple of 16 of at least 64 (VAE stride 8 x patch 2)")
    return config, args


def check_empty(split_dir: Path) -> None:
    if split_dir.exists() and any(split_dir.iterdir()):
        raise SyntheticDatasetError(f"{split_dir} already holds files; choose another --out or remove that folder")


def contact_sheet(config: SyntheticDatasetConfig, clips: list[ClipSpec]) -> np.ndarray:
    """(rows x H, (PREVIEW_COLUMNS + 1) x W, 3) uint8: one clip per row at evenly spaced frames, then
    the pose image of the middle frame over the dimmed render (they must line up)."""
    rows = []
    for spec in clips:
        keypoints = clip_keypoints(spec, clip_audio(spec, config), config)
        video = render_avatar(keypoints, Identity.sample(spec.identity.seed))
        times = np.linspace(0, config.frames - 1, PREVIEW_COLUMNS).round().astype(int)
        middle = config.frames // 2
        pose = draw_pose_frames(keypoints.slice_frames(middle, middle + 1), "face")[0]
        overlay = np.where(pose.any(axis=-1, keepdims=True), pose, video[middle] // 2)
        row = np.concatenate([*video[times], overlay], axis=1)
        cv2.putText(row, spec.name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    return np.concatenate(rows, axis=0)


def main(argv: list[str]) -> None:
    config, args = parse_config(argv)
    plans = {split: plan_split(config, split) for split in SPLITS}
    for split in SPLITS:
        check_empty(args.out / split)
    # Workers are fresh interpreters (spawn: no forked thread state); one worker runs in this process.
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) if args.workers > 1 else None
    parallel_map = pool.map if pool is not None else (lambda function, items, chunksize=1: map(function, items))
    try:
        for split, (people, clips) in plans.items():
            split_dir = args.out / split
            list(parallel_map(partial(write_identity, split_dir, config=config), people))
            written = parallel_map(partial(write_clip, split_dir, config=config), clips, chunksize=4)
            for _ in tqdm(written, total=len(clips), desc=f"{split} clips"):
                pass
            write_manifest(split_dir, split, people, clips, config)
            print(f"wrote {len(clips)} clips of {len(people)} people to {split_dir}")
    finally:
        if pool is not None:
            pool.shutdown()
    if args.preview is not None:
        shown = [  # the first clip of the first few people of each split
            clips[index]
            for split, (people, clips) in plans.items()
            for index in range(min(PREVIEW_PEOPLE[split], len(people), len(clips)))
        ]
        sheet = contact_sheet(config, shown)
        with atomic_output(args.preview) as temporary:
            cv2.imwrite(str(temporary), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as error:  # bad user input: the message names the file or key and the fix
        raise SystemExit(f"error: {error}") from None
