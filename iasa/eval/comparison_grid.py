"""A PNG that shows the ground truth above each variant, a few frames side by side.

One row per video (the order of ``rows``: the ground truth first, then each variant), one column per
frame index, a label panel on the left of each row (its text may hold several lines, e.g. the variant
and its PSNR) and a header strip naming the frames. Labels are drawn with OpenCV's Hershey font.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from iasa.atomic_io import atomic_output

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
FONT_THICKNESS = 1
TEXT_COLOUR = (20, 20, 20)
PANEL_COLOUR = (255, 255, 255)
MARGIN = 8  # pixels around the text and between the tiles
LINE_GAP = 6  # pixels between two lines of a label


def _text_block(lines: list[str]) -> tuple[int, int, int]:
    """(width, height, line step) in pixels of the lines drawn one under the other."""
    sizes = [cv2.getTextSize(line, FONT, FONT_SCALE, FONT_THICKNESS) for line in lines]
    step = max(size[1] + baseline for size, baseline in sizes) + LINE_GAP
    return max(size[0] for size, _ in sizes), step * len(lines) - LINE_GAP, step


def _draw_lines(canvas: np.ndarray, lines: list[str], left: int, top: int) -> None:
    _, _, step = _text_block(lines)
    ascent = cv2.getTextSize("Ag", FONT, FONT_SCALE, FONT_THICKNESS)[0][1]
    for index, line in enumerate(lines):
        origin = (left, top + ascent + index * step)
        cv2.putText(canvas, line, origin, FONT, FONT_SCALE, TEXT_COLOUR, FONT_THICKNESS, cv2.LINE_AA)


def comparison_grid(
    rows: dict[str, np.ndarray], frame_indices: Sequence[int], labels: dict[str, str] | None = None
) -> np.ndarray:
    """(height, width, 3) uint8 RGB picture: for each entry of rows (name -> (F, H, W, 3) uint8 video, all
    of one frame size), its label (labels[name], default the name; '\\n' starts a new line) and its frames
    at frame_indices."""
    if not rows:
        raise ValueError("comparison_grid needs at least one video")
    if not frame_indices:
        raise ValueError("comparison_grid needs at least one frame index")
    labels = labels or {}
    unknown = sorted(set(labels) - set(rows))
    if unknown:
        raise ValueError(f"labels {unknown} name no row; rows are {list(rows)}")
    frame_size = next(iter(rows.values())).shape[1:]
    for name, video in rows.items():
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"row '{name}': expected a (frames, height, width, 3) uint8 video, got {video.dtype} {tuple(video.shape)}")
        if video.shape[1:] != frame_size:
            raise ValueError(f"row '{name}' has frames of {tuple(video.shape[1:])}, the first row {tuple(frame_size)}")
        outside = [index for index in frame_indices if not -video.shape[0] <= index < video.shape[0]]
        if outside:
            raise ValueError(f"row '{name}' has {video.shape[0]} frames; frame indices {outside} are outside it")
    height, width, _ = frame_size
    texts = {name: labels.get(name, name).split("\n") for name in rows}
    headers = [[f"frame {index}"] for index in frame_indices]
    panel_width = max(_text_block(lines)[0] for lines in texts.values()) + 2 * MARGIN
    header_height = _text_block(headers[0])[1] + 2 * MARGIN
    row_height = max(height, max(_text_block(lines)[1] for lines in texts.values())) + MARGIN
    grid = np.full(
        (header_height + len(rows) * row_height, panel_width + len(frame_indices) * (width + MARGIN), 3),
        PANEL_COLOUR, dtype=np.uint8,
    )  # fmt: skip
    for column, lines in enumerate(headers):
        _draw_lines(grid, lines, panel_width + column * (width + MARGIN), MARGIN)
    for row, (name, video) in enumerate(rows.items()):
        top = header_height + row * row_height
        _, text_height, _ = _text_block(texts[name])
        _draw_lines(grid, texts[name], MARGIN, top + max(0, (height - text_height) // 2))
        for column, index in enumerate(frame_indices):
            left = panel_width + column * (width + MARGIN)
            grid[top : top + height, left : left + width] = video[index]
    return grid


def write_comparison_grid(
    path: str | Path, rows: dict[str, np.ndarray], frame_indices: Sequence[int], labels: dict[str, str] | None = None
) -> None:
    """Write comparison_grid(rows, frame_indices, labels) to the .png ``path``, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: the comparison grid is written as PNG; give a path ending in .png")
    grid = comparison_grid(rows, frame_indices, labels)
    with atomic_output(path) as temporary:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
