"""What every Agg renderer of the package shares: fixed dpi and font, text measuring and drawing, colours.

Fixed dpi and font so that the same input always yields the same pixels (and 1 pt maps to a known pixel size);
literal text only (no mathtext, no TeX). Matplotlib shares font caches between figures, so every renderer draws
under :data:`RENDER_LOCK`: concurrent rendering (e.g. a callback thread plus the main thread) is safe at
negligible cost, since rendering is never the hot path.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

__all__ = [
    "CAPTION_PT",
    "CARD_WIDTH_PX",
    "DIVERGING_CMAP",
    "DPI",
    "FONT_FAMILY",
    "MARGIN_PX",
    "RENDER_LOCK",
    "SEQUENTIAL_IMAGE_CMAP",
    "SEQUENTIAL_TEXT_CMAP",
    "TITLE_PT",
    "HeaderLine",
    "TextMeasurer",
    "blank_figure",
    "figure_to_rgb",
    "font",
    "layout_header",
    "printable",
    "pt_to_px",
    "put_text",
    "put_vertical_text",
    "resolve_vmax",
    "score_colormap",
    "score_rgb",
    "text_colour",
    "truncate_to_width",
    "wrap_words",
]

DPI = 100
#: Width of TensorBoard's IMAGES card (CSS pixels, whatever the window size): an image this wide is shown there at
#: its actual size, pixel for pixel; a wider one is scaled down (with nearest-neighbour sampling: text gets ragged).
CARD_WIDTH_PX = 350
FONT_FAMILY = "DejaVu Sans"  # bundled with matplotlib: the same glyphs everywhere
MARGIN_PX = 16
TITLE_PT = 13.0
CAPTION_PT = 10.5
#: Colour maps: white-to-red for non-negative token scores, ``jet`` for non-negative image relevance (the familiar
#: Grad-CAM look; low values stay distinguishable over dark images), blue-white-red centred at 0 for signed scores.
SEQUENTIAL_TEXT_CMAP = "Reds"
SEQUENTIAL_IMAGE_CMAP = "jet"
DIVERGING_CMAP = "RdBu_r"

#: Held while drawing: matplotlib's font caches are shared between figures.
RENDER_LOCK = threading.Lock()

#: A header line: ``(text, font, baseline y in pixels from the top edge)``.
HeaderLine = tuple[str, FontProperties, int]


#: ``(text, font) -> (width, height, descent)`` in pixels at :data:`DPI`: the same for every canvas, so measured once
#: per process (a monitor measures the same tokens for every method and every epoch). Bounded: cleared when full.
_TEXT_SIZES: dict[tuple[str, int], tuple[float, float, float]] = {}
_TEXT_SIZES_LIMIT = 65536


class TextMeasurer:
    """Measures rendered text in pixels with the Agg renderer at the fixed :data:`DPI`.

    Example:
        >>> measure = TextMeasurer()
        >>> measure.width("movie", font(10)) == measure.width("movie", font(10)) > measure.width("a", font(10))
        True
    """

    def __init__(self, width_px: int = CARD_WIDTH_PX) -> None:
        self._renderer = FigureCanvasAgg(Figure(figsize=(width_px / DPI, 1.0), dpi=DPI)).get_renderer()

    def _size(self, text: str, prop: FontProperties) -> tuple[float, float, float]:
        key = (text, hash(prop))  # matplotlib's own FontProperties equality is equality of this hash
        size = _TEXT_SIZES.get(key)
        if size is None:
            w, h, d = self._renderer.get_text_width_height_descent(text, prop, ismath=False)
            if len(_TEXT_SIZES) >= _TEXT_SIZES_LIMIT:
                _TEXT_SIZES.clear()
            size = _TEXT_SIZES[key] = (float(w), float(h), float(d))
        return size

    def width(self, text: str, prop: FontProperties) -> float:
        """Return the width in pixels of ``text`` drawn literally (no mathtext) with ``prop``."""
        return self._size(text, prop)[0]

    def height_descent(self, text: str, prop: FontProperties) -> tuple[float, float]:
        """Return ``(height, descent)`` in pixels of ``text`` drawn literally with ``prop``."""
        _, h, d = self._size(text, prop)
        return h, d

    def ascent_descent(self, prop: FontProperties) -> tuple[float, float]:
        """Return ``(ascent, descent)`` of a line in ``prop``, the same for every text (so lines share a baseline)."""
        # A probe string with tall capitals and deep descenders.
        h, d = self.height_descent("ÁgjpqyT|", prop)
        return h - d, d


def font(size_pt: float, **kwargs: str) -> FontProperties:
    """Return the fixed font (:data:`FONT_FAMILY`) at ``size_pt`` points; ``kwargs``: e.g. ``weight="bold"``."""
    return FontProperties(family=FONT_FAMILY, size=size_pt, **kwargs)


def pt_to_px(pt: float) -> float:
    """Points to pixels at the fixed :data:`DPI`.

    Example:
        >>> pt_to_px(72.0)
        100.0
    """
    return pt * DPI / 72.0


def printable(text: str) -> str:
    r"""``text`` with ``\r\n`` / ``\r`` as ``\n`` and tabs as spaces (what :func:`wrap_words` splits on)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")


def truncate_to_width(text: str, width_of: Callable[[str], float], max_width: float) -> str:
    """Return ``text``, or its longest prefix plus ``…`` that fits in ``max_width`` pixels.

    Example:
        >>> truncate_to_width("abcdef", len, 4)
        'abc…'
    """
    if width_of(text) <= max_width:
        return text
    lo, hi = 0, len(text)  # binary search on the prefix length; widths grow monotonically with it
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if width_of(text[:mid] + "…") <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def wrap_words(text: str, width_of: Callable[[str], float], max_width: float) -> list[str]:
    """Greedily wrap ``text`` at spaces (and existing newlines) so each line fits in ``max_width`` pixels.

    A word wider than a line is truncated with ``…`` (see :func:`truncate_to_width`).

    Example:
        >>> wrap_words("a bb ccc dddddddd", len, 5)
        ['a bb', 'ccc', 'dddd…']
    """
    lines: list[str] = []
    for paragraph in printable(text).split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if width_of(candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = truncate_to_width(word, width_of, max_width)
        lines.append(current)
    return lines


def layout_header(
    title: str | None, caption: str | None, measure: TextMeasurer, max_width: float, top: int = MARGIN_PX
) -> tuple[list[HeaderLine], int]:
    """Lay out a bold title and a caption, each wrapped to ``max_width`` pixels, from ``top`` downwards.

    Args:
        title: Bold heading (:data:`TITLE_PT`); ``None`` or empty: none.
        caption: Line(s) under the title (:data:`CAPTION_PT`); ``None`` or empty: none.
        measure: Measures the text widths.
        max_width: Width available to a line, in pixels.
        top: Pixel row where the header starts.

    Returns:
        The lines to draw (see :data:`HeaderLine`) and the height they take, including an 8-pixel gap below them
        when there is any line (0 otherwise).
    """
    lines: list[HeaderLine] = []
    height = 0
    for text, pt, weight in ((title, TITLE_PT, "bold"), (caption, CAPTION_PT, "normal")):
        if not text:
            continue
        prop = font(pt, weight=weight)
        line_h = round(pt_to_px(pt) * 1.35)
        for line in wrap_words(text, lambda s, p=prop: measure.width(s, p), max_width):
            lines.append((line, prop, top + height + round(line_h * 0.8)))
            height += line_h
    if lines:
        height += 8
    return lines, height


def blank_figure(width_px: int, height_px: int) -> tuple[Figure, FigureCanvasAgg]:
    """A white ``width_px x height_px`` figure at the fixed :data:`DPI` and its Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    return fig, FigureCanvasAgg(fig)


def put_text(fig: Figure, text: str, px: float, baseline: float, prop: FontProperties, **kw: object) -> None:
    """Draw literal text (no mathtext, no TeX) with its baseline at a top-left pixel position."""
    width, height = fig.get_size_inches() * fig.dpi
    fig.text(
        px / width, 1.0 - baseline / height, text, fontproperties=prop, parse_math=False, usetex=False,
        **{"va": "baseline", **kw},
    )


def put_vertical_text(
    fig: Figure, text: str, center_x: float, bottom: float, prop: FontProperties, **kw: object
) -> None:
    """Draw literal text written upwards (rotated 90°), starting at pixel row ``bottom``, centred on ``center_x``."""
    put_text(fig, text, center_x, bottom, prop, rotation=90, rotation_mode="anchor", ha="left", va="center", **kw)


def figure_to_rgb(canvas: FigureCanvasAgg) -> np.ndarray:
    """Draw the canvas and return its pixels as an owned ``[H, W, 3]`` uint8 array (alpha dropped)."""
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()


def resolve_vmax(values: np.ndarray, vmax: float | None) -> float:
    """Return a usable positive colour-scale maximum: ``vmax`` if valid, else ``max(|values|)``, else 1.0.

    Example:
        >>> resolve_vmax(np.array([-3.0, 1.0, np.nan]), None), resolve_vmax(np.zeros(2), None)
        (3.0, 1.0)
    """
    if vmax is not None and math.isfinite(vmax) and vmax > 0:
        return float(vmax)
    finite = np.abs(values[np.isfinite(values)]) if np.size(values) else np.zeros(0)
    peak = float(finite.max()) if finite.size else 0.0
    return peak if peak > 0 else 1.0


def score_colormap(signed: bool, sequential: str = SEQUENTIAL_TEXT_CMAP) -> Colormap:
    """The diverging map for signed scores, else the ``sequential`` one."""
    return colormaps[DIVERGING_CMAP if signed else sequential]


def score_rgb(cmap: Colormap, score: float | np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """The uint8 RGB colour ``[..., 3]`` of ``score`` (a number or an array) on a ``[0, scale]`` scale, clipped.

    With ``signed``, the scale is ``[-scale, scale]``.

    Example:
        >>> score_rgb(score_colormap(True), 0.0, 1.0, signed=True).tolist()  # white-ish at 0
        [247, 246, 246]
        >>> score_rgb(score_colormap(False), np.array([[0.0, 2.0]]), 1.0, signed=False).shape  # one call per array
        (1, 2, 3)
    """
    ratio = np.clip(np.asarray(score, dtype=np.float64) / scale, -1.0 if signed else 0.0, 1.0)
    pos = 0.5 + 0.5 * ratio if signed else ratio
    return np.round(np.asarray(cmap(pos))[..., :3] * 255).astype(np.uint8)


def text_colour(rgb: Sequence[int] | np.ndarray) -> str:
    """``"white"`` on a dark background colour, else ``"black"``.

    Example:
        >>> text_colour([20, 20, 120]), text_colour([250, 240, 200])
        ('white', 'black')
    """
    luminance = float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0
    return "white" if luminance < 0.5 else "black"
