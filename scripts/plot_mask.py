"""Picture of an input-aware sparse attention layout: which frames and which key tokens a query sees.

    python scripts/plot_mask.py --keypoints clip.npz --out mask.png [--query-frame 12] [top_k=2 ...]
    python scripts/plot_mask.py --out mask.png            # a synthetic speaker (81 frames, 512x512)

Left: the frame-selection matrix (rows: query latent frames, columns: key frames; own frame, frame 0
and the K pose-similar frames coloured apart; the plotted query row framed in red). Right: one panel
per key latent frame with the tokens the query frame may attend to, coloured by region; tokens it
may not see are drawn dark (their region still faintly visible), allowed background tokens of the own
frame light grey. key=value arguments override SparseAttentionConfig fields.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import atomic_output  # noqa: E402
from iasa.attention import SparseAttentionConfig, SparseLayout, build_sparse_layout, density_statistics  # noqa: E402
from iasa.attention.masks import class_table, token_classes  # noqa: E402
from iasa.pose.synthetic_speaker import synthetic_speaker  # noqa: E402
from iasa.config import load_config, split_config_args  # noqa: E402
from iasa.errors import InputError  # noqa: E402
from iasa.pose.keypoints import WholeBodyKeypoints  # noqa: E402

# BGR colours (OpenCV order).
REGION_COLOURS = [(60, 60, 230), (60, 200, 60), (230, 160, 40), (40, 200, 230), (200, 80, 200), (160, 160, 60)]
OWN_BACKGROUND = (200, 200, 200)
HIDDEN_SHADE = 0.22
WHITE, BLACK, TEXT = (255, 255, 255), (0, 0, 0), (30, 30, 30)
SELECTION_COLOURS = {"own": (90, 60, 20), "first": (0, 140, 255), "topk": (80, 180, 60), "none": (235, 235, 235)}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def allowed_key_tokens(layout: SparseLayout, query_frame: int, query_region: int | None) -> torch.Tensor:
    """(T, N) bool: key tokens that some query token of ``query_frame`` (of one region, if given) may see,
    read from the rule's class table."""
    token_class, regions = token_classes(layout)
    token_class = token_class.reshape(layout.num_frames, layout.tokens_per_frame)
    query_classes = token_class[query_frame]
    if query_region is not None:
        query_classes = query_classes[layout.token_regions[query_frame].cpu() == query_region]
    visible = class_table(layout.frame_selection, regions)[torch.unique(query_classes)].any(0)
    return visible[token_class]


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45, colour=TEXT) -> None:
    cv2.putText(image, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def draw_selection(layout: SparseLayout, query_frame: int, cell: int, top_k: int) -> np.ndarray:
    frames = layout.num_frames
    margin = 34
    image = np.full((margin + frames * cell + 60, margin + frames * cell + 10, 3), 255, np.uint8)
    for tq in range(frames):
        for tk in range(frames):
            if tq == tk:
                kind = "own"
            elif not layout.frame_selection[tq, tk]:
                kind = "none"
            elif tk == 0:
                kind = "first"
            else:
                kind = "topk"
            y, x = margin + tq * cell, margin + tk * cell
            cv2.rectangle(image, (x, y), (x + cell - 2, y + cell - 2), SELECTION_COLOURS[kind], -1)
    for index in range(0, frames, 5):
        put_text(image, str(index), (margin + index * cell, margin - 6), 0.35)
        put_text(image, str(index), (4, margin + index * cell + cell - 4), 0.35)
    y = margin + query_frame * cell
    cv2.rectangle(image, (margin - 2, y - 2), (margin + frames * cell, y + cell), (0, 0, 220), 2)
    put_text(image, "key frame ->", (margin, 12), 0.4)
    legend_y = margin + frames * cell + 16
    for offset, (kind, label) in enumerate(
        (("own", "own"), ("first", "frame 0"), ("topk", f"top-{top_k}"), ("none", "hidden"))
    ):
        x = margin + offset * 80
        cv2.rectangle(image, (x, legend_y - 10), (x + 12, legend_y + 2), SELECTION_COLOURS[kind], -1)
        put_text(image, label, (x + 16, legend_y), 0.38)
    put_text(image, "rows: query frame", (margin, legend_y + 22), 0.38)
    return image


def draw_frame_panel(layout: SparseLayout, allowed: torch.Tensor, key_frame: int, query_frame: int, pixels: int) -> np.ndarray:
    grid_h, grid_w = layout.grid_size
    regions = layout.token_regions[key_frame].reshape(grid_h, grid_w).numpy()
    visible = allowed[key_frame].reshape(grid_h, grid_w).numpy()
    palette = np.array([BLACK] + [REGION_COLOURS[i % len(REGION_COLOURS)] for i in range(regions.max(initial=0))], np.float32)
    colours = palette[regions]
    colours = np.where(visible[..., None], colours, colours * HIDDEN_SHADE + 25)
    if key_frame == query_frame:
        colours[(regions == 0) & visible] = OWN_BACKGROUND
    tile = cv2.resize(colours.astype(np.uint8), (grid_w * pixels, grid_h * pixels), interpolation=cv2.INTER_NEAREST)
    title = 20
    panel = np.full((tile.shape[0] + title, tile.shape[1], 3), 255, np.uint8)
    panel[title:] = tile
    if key_frame == query_frame:
        tag, colour = "own", SELECTION_COLOURS["own"]
    elif layout.frame_selection[query_frame, key_frame]:
        tag, colour = ("frame 0" if key_frame == 0 else "top-K"), (0, 110, 0)
    else:
        tag, colour = "hidden", (120, 120, 120)
    put_text(panel, f"f{key_frame} {tag}", (2, 14), 0.42, colour)
    if key_frame == query_frame:
        cv2.rectangle(panel, (0, title), (panel.shape[1] - 1, panel.shape[0] - 1), (0, 0, 220), 2)
    return panel


def render(layout: SparseLayout, config: SparseAttentionConfig, query_frame: int, query_region: int | None, source: str) -> np.ndarray:
    grid_h, grid_w = layout.grid_size
    pixels = max(1, 200 // max(grid_h, grid_w))
    allowed = allowed_key_tokens(layout, query_frame, query_region)
    panels = [draw_frame_panel(layout, allowed, frame, query_frame, pixels) for frame in range(layout.num_frames)]
    columns = min(7, len(panels))
    rows = -(-len(panels) // columns)
    panel_h, panel_w = panels[0].shape[:2]
    gap = 6
    grid = np.full((rows * (panel_h + gap), columns * (panel_w + gap), 3), 255, np.uint8)
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        grid[row * (panel_h + gap) : row * (panel_h + gap) + panel_h, column * (panel_w + gap) : column * (panel_w + gap) + panel_w] = panel
    selection = draw_selection(layout, query_frame, max(8, min(22, 460 // layout.num_frames)), config.top_k)

    header, legend = 58, 30
    height = header + max(selection.shape[0], grid.shape[0]) + legend
    width = selection.shape[1] + 20 + grid.shape[1] + 10
    image = np.full((height, width, 3), 255, np.uint8)
    image[header : header + selection.shape[0], : selection.shape[1]] = selection
    image[header : header + grid.shape[0], selection.shape[1] + 20 : selection.shape[1] + 20 + grid.shape[1]] = grid
    statistics = density_statistics(layout)
    who = "all query tokens" if query_region is None else f"query tokens of region {layout.region_names[query_region - 1]!r}"
    put_text(image, f"IASA layout of {source}: {layout.num_frames} latent frames x {grid_h}x{grid_w} tokens, K={config.top_k}, "
             f"direction={config.direction}, keep_first_frame={config.keep_first_frame}", (8, 20), 0.5)  # fmt: skip
    put_text(image, f"right: key tokens visible to {who} of latent frame {query_frame}; token density of the whole "
             f"mask {100 * statistics['token_density']:.1f}%", (8, 42), 0.5)  # fmt: skip
    legend_y = height - 10
    x = selection.shape[1] + 20
    entries = [(REGION_COLOURS[i % len(REGION_COLOURS)], name) for i, name in enumerate(layout.region_names)]
    entries += [(OWN_BACKGROUND, "background (own frame only)"), ((45, 45, 45), "not visible (dark)")]
    for colour, name in entries:
        cv2.rectangle(image, (x, legend_y - 11), (x + 12, legend_y + 1), colour, -1)
        put_text(image, name, (x + 16, legend_y), 0.42)
        x += 30 + 9 * len(name)
    return image


def check_output(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; pass the image file to write, e.g. --out {path / 'mask.png'}")
    if not cv2.haveImageWriter(str(path)):
        raise InputError(f"--out {path}: OpenCV cannot write images of type {path.suffix or '(no suffix)'}; use .png")


def write_png(image: np.ndarray, path: Path) -> None:
    with atomic_output(path, suffix=path.suffix) as temporary:
        if not cv2.imwrite(str(temporary), image):
            raise InputError(f"could not write {path}")


def main(argv: list[str] | None = None) -> None:
    overrides, rest = split_config_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keypoints", type=Path, help="keypoint .npz (WholeBodyKeypoints.save); default: synthetic")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--config", type=Path, help="YAML with SparseAttentionConfig fields")
    parser.add_argument("--query-frame", type=int, help="latent query frame to show (default: the last)")
    parser.add_argument("--query-region", help="only the query tokens of this region (a name in config.regions)")
    parser.add_argument("--frames", type=int, default=81, help="synthetic clip: video frames (4n + 1)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("HEIGHT", "WIDTH"), help="synthetic clip: image size")
    parser.add_argument("--seed", type=int, default=0, help="synthetic clip: random seed")
    args = parser.parse_args(rest)
    config = load_config(SparseAttentionConfig, args.config, overrides)
    check_output(args.out)
    if args.keypoints is not None:
        keypoints, source = WholeBodyKeypoints.load(args.keypoints), args.keypoints.name
    else:
        keypoints = synthetic_speaker(args.frames, tuple(args.size), seed=args.seed)
        source = f"a synthetic speaker ({args.size[0]}x{args.size[1]})"
    try:
        layout = build_sparse_layout(keypoints, config)
    except ValueError as error:  # the clip's length or image size does not fit a layout
        raise InputError(f"{source}: {error}") from error
    query_frame = layout.num_frames - 1 if args.query_frame is None else args.query_frame
    if not 0 <= query_frame < layout.num_frames:
        parser.error(f"--query-frame must be in [0, {layout.num_frames - 1}]")
    query_region = None
    if args.query_region is not None:
        if args.query_region not in layout.region_names:
            parser.error(f"--query-region must be one of {layout.region_names}")
        query_region = layout.region_names.index(args.query_region) + 1
    write_png(render(layout, config, query_frame, query_region, source), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except InputError as error:  # bad user input: the message names the file or key and the fix
        raise SystemExit(f"error: {error}") from None
