"""Per-frame PSNR of a ground-truth clip encoded and decoded whole by a model folder's VAE (the decoder's drift
over a long clip: the decoder stage's check).

    python scripts/vae_round_trip.py --model_dir outputs/miniature/vae_decoder/model \
        --video data/miniature_long/heldout/videos/person016_0000.mp4 [--frames 121] [--model_size mini] [--device cpu] \
        [--strip round_trip.png]

Prints the PSNR of every frame, 8 to a line (the decode is decode_video, latent frame by latent frame with the
causal caches carried, as the demo decodes). --strip: a PNG of STRIP_FRAMES frames spread over the clip, the
ground truth above the decoded frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import atomic_output  # noqa: E402
from iasa.errors import InputError  # noqa: E402
from iasa.eval.video_metrics import psnr  # noqa: E402
from iasa.train.dataset import read_frames, video_frame_count  # noqa: E402
from iasa.train.vae_pretrain import move_vae_scale  # noqa: E402
from iasa.video.assembly import load_wan_components  # noqa: E402
from iasa.video.config import WanModelConfig  # noqa: E402
from iasa.video.latent_grid import num_latent_frames  # noqa: E402
from iasa.video.vae_decode import decode_video  # noqa: E402

FRAMES_PER_LINE = 8
STRIP_FRAMES = 6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="model folder whose VAE encodes and decodes")
    parser.add_argument("--video", type=Path, required=True, help="ground-truth clip (.mp4)")
    parser.add_argument("--frames", type=int, default=121, help="its first FRAMES frames (4n + 1)")
    parser.add_argument("--model_size", default="mini")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strip", type=Path, default=None, help="PNG: ground truth above decoded, a few frames")
    args = parser.parse_args(argv)
    try:
        num_latent_frames(args.frames)
    except ValueError as error:
        print(f"vae_round_trip.py: --frames {args.frames}: {error}", file=sys.stderr)
        return 2
    try:
        available, _ = video_frame_count(args.video)
        if available < args.frames:
            raise InputError(f"{args.video} has {available} frames; pass --frames {available - (available - 1) % 4} or fewer")
        model = WanModelConfig(model_size=args.model_size, model_dir=args.model_dir, dtype="float32", device=args.device)
        vae = load_wan_components(model, ("vae",)).vae
    except InputError as error:
        print(f"vae_round_trip.py: {error}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    move_vae_scale(vae, device)
    truth = read_frames(args.video, list(range(args.frames)))  # (F, H, W, 3) uint8
    clip = rearrange(torch.from_numpy(truth), "f h w c -> 1 c f h w").to(device).float() / 127.5 - 1
    with torch.no_grad():
        decoded = decode_video(vae, vae.model.encode(clip, vae.scale))
    frames = ((rearrange(decoded[0], "c f h w -> f h w c").float() + 1) * 127.5).round().clamp(0, 255)
    frames = frames.to(torch.uint8).cpu().numpy()
    scores = [psnr(frames[index : index + 1], truth[index : index + 1]) for index in range(args.frames)]
    for start in range(0, args.frames, FRAMES_PER_LINE):
        line = " ".join(f"{score:5.1f}" for score in scores[start : start + FRAMES_PER_LINE])
        print(f"frames {start:3d}-{min(start + FRAMES_PER_LINE, args.frames) - 1:3d}: {line}")
    print(f"mean {sum(scores) / len(scores):.2f} dB over {args.frames} frames")
    if args.strip is not None:
        shown = np.linspace(0, args.frames - 1, STRIP_FRAMES).round().astype(int)
        strip = rearrange(np.stack([truth[shown], frames[shown]]), "row f h w c -> (row h) (f w) c")
        with atomic_output(args.strip) as temporary:
            Image.fromarray(strip).save(temporary, format="PNG")
        print(f"wrote {args.strip} (frames {', '.join(map(str, shown))}: ground truth above, decoded below)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
