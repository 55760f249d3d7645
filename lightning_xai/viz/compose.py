"""Compose rendered heatmaps: several methods side by side, or one sample across epochs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["compose_grid", "evolution_strip"]

_GAP = 8


def compose_grid(images: Sequence[np.ndarray], columns: int | None = None, gap: int = _GAP) -> np.ndarray:
    """Tile ``[H, W, 3]`` uint8 images on a white canvas, row-major, each cell top-left aligned.

    Args:
        images: rendered heatmaps (e.g. one per method for the same sample).
        columns: images per row (default: all in one row).
        gap: white pixels between cells.

    Returns:
        ``[H, W, 3]`` uint8.

    Example:
        >>> import numpy as np
        >>> a, b = np.zeros((10, 20, 3), np.uint8), np.zeros((30, 5, 3), np.uint8)
        >>> compose_grid([a, b]).shape
        (30, 33, 3)
        >>> compose_grid([a, b], columns=1).shape
        (48, 20, 3)
    """
    if not images:
        raise ValueError("compose_grid needs at least one image")
    columns = len(images) if columns is None else max(1, int(columns))
    rows = [list(images[i : i + columns]) for i in range(0, len(images), columns)]
    widths = [max(img.shape[1] for img in (row[c] for row in rows if c < len(row))) for c in range(columns)]
    heights = [max(img.shape[0] for img in row) for row in rows]
    canvas = np.full(
        (sum(heights) + gap * (len(rows) - 1), sum(widths) + gap * (columns - 1), 3), 255, dtype=np.uint8
    )
    top = 0
    for row, height in zip(rows, heights, strict=True):
        left = 0
        for c, image in enumerate(row):
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image[..., :3]
            left += widths[c] + gap
        top += height + gap
    return canvas


def evolution_strip(images: Sequence[np.ndarray], gap: int = _GAP) -> np.ndarray:
    """The same sample's heatmaps over epochs, oldest first: one column (texts) or one row (images).

    Token heatmaps are wide and short, so they are stacked vertically; image overlays are square-ish, so they are
    put side by side.

    Example:
        >>> import numpy as np
        >>> evolution_strip([np.zeros((10, 200, 3), np.uint8)] * 3).shape
        (46, 200, 3)
    """
    if not images:
        raise ValueError("evolution_strip needs at least one image")
    wide = all(image.shape[1] >= 2 * image.shape[0] for image in images)
    return compose_grid(images, columns=1 if wide else len(images), gap=gap)
