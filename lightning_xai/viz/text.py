"""Token-level relevance heatmaps rendered to RGB arrays (headless, thread-safe, no pyplot)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

__all__ = ["merge_wordpieces", "render_token_heatmap"]

Aggregation = Literal["sum", "mean", "max"]

# Fixed dpi and font so that the same input always yields the same pixels (and 1 pt maps to a known pixel size).
_DPI = 100
_FONT_FAMILY = "DejaVu Sans"
_MARGIN_PX = 16
_TOKEN_PT = 11.0
_TITLE_PT = 13.0
_CAPTION_PT = 10.5
_LEGEND_PT = 9.0
_TOKEN_PAD_X = 3  # inner horizontal padding of a token box
_TOKEN_GAP_X = 3  # white gap between neighbouring boxes
_LINE_GAP_Y = 4  # white gap between lines of boxes
_MAX_LINES = 1000  # Agg cannot draw images taller than 2**16 px; truncating keeps far below that
_LEGEND_BAR_PX = (160, 10)
_SEQUENTIAL_TEXT_CMAP = "Reds"
_DIVERGING_CMAP = "RdBu_r"

# Matplotlib shares font caches between figures; one lock makes concurrent rendering (e.g. a callback thread
# plus the main thread) safe at negligible cost, since rendering is never the hot path.
_RENDER_LOCK = threading.Lock()

_WORDPIECE_MARK = "##"
_BYTE_BPE_MARK = "\u0120"  # "Ġ": GPT-2 / RoBERTa byte-level BPE encodes a leading space as this
_SENTENCEPIECE_MARK = "\u2581"  # "▁": SentencePiece's word-start marker


def merge_wordpieces(
    tokens: Sequence[str],
    scores: np.ndarray,
    *,
    aggregation: Aggregation = "sum",
) -> tuple[list[str], np.ndarray]:
    """Merge sub-word pieces into whole words and aggregate their scores.

    The tokenizer convention is detected from the pieces themselves, in this order:

    * WordPiece (BERT) if any token starts with ``##``: a ``##`` piece continues the previous word
      (``##`` is stripped).
    * Byte-level BPE (GPT-2, RoBERTa) elif any token starts with ``Ġ``: a ``Ġ`` piece starts a new word
      (``Ġ`` is stripped), any other piece continues the previous word. The first token always starts a word.
    * SentencePiece (T5, ALBERT, XLM-R) elif any token starts with ``▁``: same rule as byte-level BPE.
    * Otherwise every token is its own word (no merging).

    Scores of the pieces of one word are combined with ``aggregation``: ``"sum"`` (default, because
    attribution relevance is additive: a word's relevance is the total of its pieces'), ``"mean"`` (average
    per piece, insensitive to how many pieces a word was split into) or ``"max"`` (strongest piece).

    Args:
        tokens: Sub-word tokens of one text, special and padding tokens already removed.
        scores: One score per token, shape ``[len(tokens)]``.
        aggregation: How to combine the scores of the pieces of one word: ``"sum"``, ``"mean"`` or ``"max"``.

    Returns:
        The words and a float64 array with one aggregated score per word.

    Raises:
        ValueError: If ``scores`` is not 1-D with one entry per token, or ``aggregation`` is unknown.

    Example:
        >>> import numpy as np
        >>> words, word_scores = merge_wordpieces(["the", "play", "##ing"], np.array([0.1, 0.5, 0.25]))
        >>> words
        ['the', 'playing']
        >>> word_scores.tolist()
        [0.1, 0.75]
        >>> merge_wordpieces(["Ġthe", "Ġplay", "ing"], np.array([1.0, 2.0, 4.0]), aggregation="max")[0]
        ['the', 'playing']
    """
    values = _check_scores(tokens, scores)
    reducers: dict[str, Callable[[np.ndarray], float]] = {"sum": np.sum, "mean": np.mean, "max": np.max}
    if aggregation not in reducers:
        raise ValueError(f"aggregation must be one of {sorted(reducers)}, got {aggregation!r}")
    reduce = reducers[aggregation]

    toks = [str(t) for t in tokens]
    if any(t.startswith(_WORDPIECE_MARK) for t in toks):
        starts = [not t.startswith(_WORDPIECE_MARK) for t in toks]
        pieces = [t[len(_WORDPIECE_MARK) :] if t.startswith(_WORDPIECE_MARK) else t for t in toks]
    else:
        mark = next((m for m in (_BYTE_BPE_MARK, _SENTENCEPIECE_MARK) if any(t.startswith(m) for t in toks)), None)
        if mark is None:
            return toks, values.copy()
        starts = [t.startswith(mark) for t in toks]
        pieces = [t[len(mark) :] if t.startswith(mark) else t for t in toks]
    if starts:
        starts[0] = True  # a leading continuation piece (truncated text) still has to start a word

    words: list[str] = []
    groups: list[list[int]] = []
    for i, (piece, is_start) in enumerate(zip(pieces, starts, strict=True)):
        if is_start:
            words.append(piece)
            groups.append([i])
        else:
            words[-1] += piece
            groups[-1].append(i)
    word_scores = np.array([float(reduce(values[g])) for g in groups], dtype=np.float64)
    return words, word_scores


def render_token_heatmap(
    tokens: Sequence[str],
    scores: np.ndarray,
    *,
    title: str | None = None,
    caption: str | None = None,
    signed: bool = False,
    vmax: float | None = None,
    width_px: int = 900,
    merge: bool = True,
    aggregation: Aggregation = "sum",
) -> np.ndarray:
    """Render tokens as text with each token's background coloured by its relevance score.

    Tokens are laid out left to right and wrapped into as many lines as needed: the image is always
    ``width_px`` wide and grows in height with the text, the font size never shrinks. Colour scale: with
    ``signed=False`` a white-to-red sequential map over ``[0, vmax]`` (negative scores are drawn as 0); with
    ``signed=True`` a diverging blue-white-red map over ``[-vmax, vmax]`` with white at 0. Scores beyond the
    scale are clipped. A legend line at the bottom shows the scale. All strings are drawn literally
    (no mathtext: ``$x$`` stays ``$x$``).

    Args:
        tokens: Content tokens (special and padding tokens already removed).
        scores: One relevance score per token, shape ``[len(tokens)]``. Non-finite scores are drawn as 0.
        title: Bold heading, e.g. ``"grad_sam · sample 3"``.
        caption: Line under the title, e.g. ``"label: positive · pred: negative (p=0.71)"``.
        signed: Use the diverging colour map centred at 0 (for methods whose relevance can be negative).
        vmax: Top of the colour scale. Pass the same value for several methods to compare them on one scale.
            It applies to the scores as drawn, i.e. after merging when ``merge=True``. Default: the largest
            absolute score (1.0 if all are 0).
        width_px: Width of the returned image in pixels.
        merge: Merge sub-word pieces into words first (see :func:`merge_wordpieces`).
        aggregation: How merged pieces' scores combine: ``"sum"``, ``"mean"`` or ``"max"``.

    Returns:
        RGB image, shape ``[H, width_px, 3]``, dtype uint8.

    Raises:
        ValueError: If ``scores`` does not match ``tokens`` or ``width_px`` is too small to lay out text.

    Example:
        >>> import numpy as np
        >>> img = render_token_heatmap(["the", "play", "##ing"], np.array([0.1, 0.9, 0.3]), title="demo")
        >>> img.dtype == np.uint8, img.ndim, img.shape[1], img.shape[2]
        (True, 3, 900, 3)
    """
    if width_px < 200:
        raise ValueError(f"width_px must be at least 200, got {width_px}")
    values = _check_scores(tokens, scores)
    values = np.where(np.isfinite(values), values, 0.0)
    words = [str(t) for t in tokens]
    if merge and words:
        words, values = merge_wordpieces(words, values, aggregation=aggregation)
    scale = _resolve_vmax(values, vmax)
    cmap = colormaps[_DIVERGING_CMAP if signed else _SEQUENTIAL_TEXT_CMAP]

    with _RENDER_LOCK:
        return _draw_token_heatmap(words, values, title, caption, signed, scale, cmap, int(width_px))


def _draw_token_heatmap(
    words: list[str],
    values: np.ndarray,
    title: str | None,
    caption: str | None,
    signed: bool,
    scale: float,
    cmap: Colormap,
    width: int,
) -> np.ndarray:
    token_prop = _font(_TOKEN_PT)
    title_prop = _font(_TITLE_PT, weight="bold")
    caption_prop = _font(_CAPTION_PT)
    legend_prop = _font(_LEGEND_PT)
    measure = _TextMeasurer(width)
    avail = width - 2 * _MARGIN_PX

    # --- layout (all in pixels, y measured downwards from the top edge) ---
    y = _MARGIN_PX
    header: list[tuple[str, FontProperties, int]] = []  # (text, font, baseline y)
    for text, prop, pt in ((title, title_prop, _TITLE_PT), (caption, caption_prop, _CAPTION_PT)):
        if not text:
            continue
        line_h = round(_pt_to_px(pt) * 1.35)
        for line in _wrap_words(text, lambda s, p=prop: measure.width(s, p), avail):
            header.append((line, prop, y + round(line_h * 0.8)))
            y += line_h
    if header:
        y += 8

    box_h = round(_pt_to_px(_TOKEN_PT) * 1.55)
    pitch = box_h + _LINE_GAP_Y
    boxes: list[tuple[int, int, int, str, float]] = []  # (x, line index, box width, text, score)
    line, x = 0, _MARGIN_PX
    hidden = 0
    for i, (word, score) in enumerate(zip(words, values, strict=True)):
        text = _visible(word)
        max_text_w = avail - 2 * _TOKEN_PAD_X
        text = _truncate_to_width(text, lambda s: measure.width(s, token_prop), max_text_w)
        w = max(int(math.ceil(measure.width(text, token_prop))) + 2 * _TOKEN_PAD_X, 2 * _TOKEN_PAD_X + 4)
        if x > _MARGIN_PX and x + w > width - _MARGIN_PX:
            line, x = line + 1, _MARGIN_PX
        if line >= _MAX_LINES:
            hidden = len(words) - i
            break
        boxes.append((x, line, w, text, float(score)))
        x += w + _TOKEN_GAP_X
    tokens_top = y
    n_lines = (boxes[-1][1] + 1) if boxes else 1
    y += n_lines * pitch
    note_y = None  # baseline of the "(no content tokens)" / "… more tokens" note, if any
    if not words:
        note_y = tokens_top + round(box_h * 0.72)
    elif hidden:
        note_y = y + round(box_h * 0.72)
        y += pitch
    legend_top = y + 10
    height = legend_top + _LEGEND_BAR_PX[1] + 8 + _MARGIN_PX

    # --- backgrounds as one pixel-exact image: crisp box edges and fast even for 512 tokens ---
    canvas_rgb = np.full((height, width, 3), 255, dtype=np.uint8)
    for bx, bl, bw, _, score in boxes:
        top = tokens_top + bl * pitch
        canvas_rgb[top : top + box_h, bx : bx + bw] = _score_rgb(cmap, score, scale, signed)
    bar_w, bar_h = _LEGEND_BAR_PX
    lo_label = f"{-scale:.3g}" if signed else "0"
    hi_label = f"{scale:.3g}"
    legend_label = "relevance (white = 0):" if signed else "relevance:"
    label_w = measure.width(legend_label, legend_prop)
    lo_w = measure.width(lo_label, legend_prop)
    bar_x = int(_MARGIN_PX + label_w + 8 + lo_w + 6)
    gradient = np.linspace(-1.0 if signed else 0.0, 1.0, bar_w)
    bar = np.stack([_score_rgb(cmap, g, 1.0, signed) for g in gradient])
    canvas_rgb[legend_top : legend_top + bar_h, bar_x : bar_x + bar_w] = bar[None, :, :]

    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    fig.figimage(canvas_rgb, xo=0, yo=0, origin="upper", resize=False)

    def put(text: str, px: float, baseline: float, prop: FontProperties, **kw: object) -> None:
        _put_text(fig, text, px, baseline, prop, **kw)

    for text, prop, baseline in header:
        put(text, _MARGIN_PX, baseline, prop, color="black")
    ascent, descent = _ascent_descent(measure, token_prop)
    baseline_off = (box_h - (ascent + descent)) / 2 + ascent
    for bx, bl, _, text, score in boxes:
        rgb = _score_rgb(cmap, score, scale, signed)
        put(text, bx + _TOKEN_PAD_X, tokens_top + bl * pitch + baseline_off, token_prop, color=_text_colour(rgb))
    if note_y is not None:
        note = f"… ({hidden} more tokens not shown)" if hidden else "(no content tokens)"
        put(note, _MARGIN_PX, note_y, _font(_TOKEN_PT, style="italic"), color="#666666")
    legend_baseline = legend_top + bar_h - 1
    put(legend_label, _MARGIN_PX, legend_baseline, legend_prop, color="#333333")
    put(lo_label, bar_x - 6 - lo_w, legend_baseline, legend_prop, color="#333333")
    put(hi_label, bar_x + bar_w + 6, legend_baseline, legend_prop, color="#333333")
    return _figure_to_rgb(canvas)


# --------------------------------------------------------------------------------------------------------------
# Helpers shared with viz.image (kept here so the module has no extra private files).
# --------------------------------------------------------------------------------------------------------------


class _TextMeasurer:
    """Measures rendered text widths in pixels with the Agg renderer at the module's fixed dpi."""

    def __init__(self, width_px: int = 900) -> None:
        self._renderer = FigureCanvasAgg(Figure(figsize=(width_px / _DPI, 1.0), dpi=_DPI)).get_renderer()

    def width(self, text: str, prop: FontProperties) -> float:
        """Return the width in pixels of ``text`` drawn literally (no mathtext) with ``prop``."""
        w, _, _ = self._renderer.get_text_width_height_descent(text, prop, ismath=False)
        return float(w)

    def height_descent(self, text: str, prop: FontProperties) -> tuple[float, float]:
        """Return ``(height, descent)`` in pixels of ``text`` drawn literally with ``prop``."""
        _, h, d = self._renderer.get_text_width_height_descent(text, prop, ismath=False)
        return float(h), float(d)


def _resolve_vmax(values: np.ndarray, vmax: float | None) -> float:
    """Return a usable positive colour-scale maximum: ``vmax`` if valid, else ``max(|values|)``, else 1.0."""
    if vmax is not None and math.isfinite(vmax) and vmax > 0:
        return float(vmax)
    finite = np.abs(values[np.isfinite(values)]) if np.size(values) else np.zeros(0)
    peak = float(finite.max()) if finite.size else 0.0
    return peak if peak > 0 else 1.0


def _wrap_words(text: str, width_of: Callable[[str], float], max_width: float) -> list[str]:
    """Greedily wrap ``text`` at spaces (and existing newlines) so each line fits in ``max_width`` pixels."""
    lines: list[str] = []
    for paragraph in _printable(text).split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if width_of(candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = _truncate_to_width(word, width_of, max_width)
        lines.append(current)
    return lines


def _truncate_to_width(text: str, width_of: Callable[[str], float], max_width: float) -> str:
    """Return ``text``, or its longest prefix plus ``…`` that fits in ``max_width`` pixels."""
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


def _put_text(fig: Figure, text: str, px: float, baseline: float, prop: FontProperties, **kw: object) -> None:
    """Draw literal text (no mathtext, no TeX) with its baseline at a top-left pixel position."""
    width, height = fig.get_size_inches() * fig.dpi
    fig.text(
        px / width,
        1.0 - baseline / height,
        text,
        fontproperties=prop,
        va="baseline",
        parse_math=False,
        usetex=False,
        **kw,
    )


def _figure_to_rgb(canvas: FigureCanvasAgg) -> np.ndarray:
    """Draw the canvas and return its pixels as an owned ``[H, W, 3]`` uint8 array (alpha dropped)."""
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()


def _font(size_pt: float, **kwargs: str) -> FontProperties:
    """Return the module's fixed font (DejaVu Sans, bundled with matplotlib) at ``size_pt`` points."""
    return FontProperties(family=_FONT_FAMILY, size=size_pt, **kwargs)


def _check_scores(tokens: Sequence[str], scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] != len(tokens):
        raise ValueError(f"scores must be 1-D with one entry per token, got shape {values.shape} for {len(tokens)}")
    return values


def _pt_to_px(pt: float) -> float:
    return pt * _DPI / 72.0


def _ascent_descent(measure: _TextMeasurer, prop: FontProperties) -> tuple[float, float]:
    # Use a probe string with tall capitals and deep descenders so every line gets the same baseline.
    h, d = measure.height_descent("ÁgjpqyT|", prop)
    return h - d, d


def _printable(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")


def _visible(token: str) -> str:
    # Tokens are drawn on one line: make control characters visible instead of breaking the layout.
    return token.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎").replace("\t", "→")


def _score_rgb(cmap: Colormap, score: float, scale: float, signed: bool) -> np.ndarray:
    if signed:
        pos = 0.5 + 0.5 * float(np.clip(score / scale, -1.0, 1.0))
    else:
        pos = float(np.clip(score / scale, 0.0, 1.0))
    return np.round(np.asarray(cmap(pos)[:3]) * 255).astype(np.uint8)


def _text_colour(rgb: np.ndarray) -> str:
    luminance = float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0
    return "white" if luminance < 0.5 else "black"
