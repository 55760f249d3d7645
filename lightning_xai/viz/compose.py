"""Compose rendered heatmaps: several methods side by side, or one sample across epochs."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = ["compose_grid", "evolution_strip", "label_band"]

_GAP = 8
#: Frames per row of an evolution strip of square-ish or tall heatmaps.
EVOLUTION_COLUMNS = 5


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


def label_band(text: str, width: int) -> np.ndarray:
    """A white ``[h, width, 3]`` uint8 band with ``text`` drawn at its left (one line, cut with ``…`` to fit).

    Used for the epoch labels of :func:`evolution_strip`. Drawn once per ``(text, width)`` and process: a strip is
    rebuilt at every validation with the same labels.

    Example:
        >>> band = label_band("epoch 3", 120)
        >>> band.shape[1], band.dtype.name, bool((band < 128).any())
        (120, 'uint8', True)
    """
    return _label_band(text, int(width)).copy()


@functools.lru_cache(maxsize=1024)
def _label_band(text: str, width: int) -> np.ndarray:
    from lightning_xai.viz._canvas import (
        CAPTION_PT,
        MARGIN_PX,
        RENDER_LOCK,
        TextMeasurer,
        blank_figure,
        figure_to_rgb,
        font,
        put_text,
        truncate_to_width,
    )

    with RENDER_LOCK:
        prop = font(CAPTION_PT, weight="bold")
        measurer = TextMeasurer()
        ascent, descent = measurer.ascent_descent(prop)
        height = int(round(ascent + descent)) + 6
        indent = min(MARGIN_PX, max(0, width // 8))  # in line with the heatmaps' own titles
        shown = truncate_to_width(text, lambda t: measurer.width(t, prop), max(1, width - 2 * indent))
        fig, canvas = blank_figure(max(1, width), height)
        put_text(fig, shown, indent, 3 + ascent, prop, color="#333333")
        return figure_to_rgb(canvas)


def evolution_strip(
    images: Sequence[np.ndarray], gap: int = _GAP, labels: Sequence[str] | None = None
) -> np.ndarray:
    """The same sample's heatmaps over epochs, oldest first, in reading order.

    Wide, short images (at least twice as wide as tall: one-line token heatmaps) are stacked in one column; others
    (image overlays, wrapped token heatmaps) fill rows of at most :data:`EVOLUTION_COLUMNS`, so a long run gives a
    page rather than a strip thousands of pixels wide. With ``labels`` (e.g. ``"epoch 0"``, one per image) each
    image gets its label above it, so a strip says which epoch each frame is.

    Args:
        images: ``[H, W, 3]`` uint8 heatmaps, oldest first.
        gap: white pixels between frames.
        labels: one label per image, drawn above it.

    Returns:
        ``[H, W, 3]`` uint8.

    Raises:
        ValueError: without images, or with a number of labels other than the number of images.

    Example:
        >>> import numpy as np
        >>> evolution_strip([np.zeros((10, 200, 3), np.uint8)] * 3).shape
        (46, 200, 3)
        >>> strip = evolution_strip([np.zeros((10, 200, 3), np.uint8)] * 3, labels=["epoch 0", "epoch 1", "epoch 2"])
        >>> strip.shape[0] > 46, strip.shape[1]
        (True, 200)
    """
    if not images:
        raise ValueError("evolution_strip needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"evolution_strip got {len(labels)} labels for {len(images)} images")
    wide = all(image.shape[1] >= 2 * image.shape[0] for image in images)
    if labels is not None:
        images = [np.concatenate([label_band(label, image.shape[1]), image[..., :3]], axis=0)
                  for label, image in zip(labels, images, strict=True)]
    return compose_grid(images, columns=1 if wide else min(len(images), EVOLUTION_COLUMNS), gap=gap)
