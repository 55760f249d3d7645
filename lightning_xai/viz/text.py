"""Token-level relevance heatmaps rendered to RGB arrays (headless, thread-safe, no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from lightning_xai.viz._canvas import (
    CARD_WIDTH_PX,
    MARGIN_PX,
    RENDER_LOCK,
    TextMeasurer,
    blank_figure,
    figure_to_rgb,
    font,
    layout_header,
    pt_to_px,
    put_text,
    put_vertical_text,
    resolve_vmax,
    score_colormap,
    score_rgb,
    text_colour,
    truncate_to_width,
)
from lightning_xai.viz.tokens import Aggregation, check_scores, merge_wordpieces

__all__ = ["merge_wordpieces", "normalise_rows", "render_token_heatmap", "render_token_matrix"]

_TOKEN_PT = 11.0
_LEGEND_PT = 9.0
_TOKEN_PAD_X = 3  # inner horizontal padding of a token box
_TOKEN_GAP_X = 3  # white gap between neighbouring boxes
_LINE_GAP_Y = 4  # white gap between lines of boxes
_MAX_LINES = 1000  # Agg cannot draw images taller than 2**16 px; truncating keeps far below that
_LEGEND_BAR_PX = (160, 10)  # the colour bar's widest size; it shrinks to fit narrow images
_LEGEND_BAR_MIN_PX = 60  # narrower than this, the legend label moves onto its own line


def render_token_heatmap(
    tokens: Sequence[str],
    scores: np.ndarray,
    *,
    title: str | None = None,
    caption: str | None = None,
    signed: bool = False,
    vmax: float | None = None,
    width_px: int = CARD_WIDTH_PX,
    merge: bool = True,
    aggregation: Aggregation = "sum",
) -> np.ndarray:
    """Render tokens as text with each token's background coloured by its relevance score.

    Tokens are laid out left to right and wrapped into as many lines as needed: the image is always
    ``width_px`` wide and grows in height with the text, the font size never shrinks. The default width is that of
    a TensorBoard IMAGES card (350 px), so the card shows the heatmap at its actual size, crisp and readable
    without "Show actual image size"; a few words per line, as many lines as the text needs. Colour scale: with
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
        width_px: Width of the returned image in pixels (at least 200).
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
        (True, 3, 350, 3)
    """
    if width_px < 200:
        raise ValueError(f"width_px must be at least 200, got {width_px}")
    values = check_scores(tokens, scores)
    values = np.where(np.isfinite(values), values, 0.0)
    words = [str(t) for t in tokens]
    if merge and words:
        words, values = merge_wordpieces(words, values, aggregation=aggregation)
    scale = resolve_vmax(values, vmax)
    cmap = score_colormap(signed)

    with RENDER_LOCK:
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
    token_prop = font(_TOKEN_PT)
    legend_prop = font(_LEGEND_PT)
    measure = TextMeasurer(width)
    avail = width - 2 * MARGIN_PX

    # --- layout (all in pixels, y measured downwards from the top edge) ---
    header, header_h = layout_header(title, caption, measure, avail)
    y = MARGIN_PX + header_h

    box_h = round(pt_to_px(_TOKEN_PT) * 1.55)
    pitch = box_h + _LINE_GAP_Y
    boxes: list[tuple[int, int, int, str, float]] = []  # (x, line index, box width, text, score)
    line, x = 0, MARGIN_PX
    hidden = 0
    for i, (word, score) in enumerate(zip(words, values, strict=True)):
        text = _visible(word)
        max_text_w = avail - 2 * _TOKEN_PAD_X
        text = truncate_to_width(text, lambda s: measure.width(s, token_prop), max_text_w)
        w = max(int(math.ceil(measure.width(text, token_prop))) + 2 * _TOKEN_PAD_X, 2 * _TOKEN_PAD_X + 4)
        if x > MARGIN_PX and x + w > width - MARGIN_PX:
            line, x = line + 1, MARGIN_PX
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
    legend = _layout_legend(signed, scale, measure, legend_prop, avail)
    legend_top = y + 10 + legend.label_drop
    height = legend_top + _LEGEND_BAR_PX[1] + 8 + MARGIN_PX

    # --- backgrounds as one pixel-exact image: crisp box edges and fast even for 512 tokens ---
    canvas_rgb = np.full((height, width, 3), 255, dtype=np.uint8)
    for bx, bl, bw, _, score in boxes:
        top = tokens_top + bl * pitch
        canvas_rgb[top : top + box_h, bx : bx + bw] = score_rgb(cmap, score, scale, signed)
    _paint_legend_bar(canvas_rgb, legend, legend_top, cmap, signed)

    fig, canvas = blank_figure(width, height)
    fig.figimage(canvas_rgb, xo=0, yo=0, origin="upper", resize=False)

    def put(text: str, px: float, baseline: float, prop: FontProperties, **kw: object) -> None:
        put_text(fig, text, px, baseline, prop, **kw)

    for text, prop, baseline in header:
        put(text, MARGIN_PX, baseline, prop, color="black")
    ascent, descent = measure.ascent_descent(token_prop)
    baseline_off = (box_h - (ascent + descent)) / 2 + ascent
    for bx, bl, _, text, score in boxes:
        rgb = score_rgb(cmap, score, scale, signed)
        put(text, bx + _TOKEN_PAD_X, tokens_top + bl * pitch + baseline_off, token_prop, color=text_colour(rgb))
    if note_y is not None:
        note = f"… ({hidden} more tokens not shown)" if hidden else "(no content tokens)"
        put(note, MARGIN_PX, note_y, font(_TOKEN_PT, style="italic"), color="#666666")
    _label_legend(fig, legend, legend_top, legend_prop)
    return figure_to_rgb(canvas)


_LEGEND_GAP = 6  # between the colour bar and its end labels


@dataclass(frozen=True)
class _Legend:
    label: str
    lo: str
    hi: str
    lo_w: float
    bar_x: int
    bar_w: int
    label_drop: int  # > 0: the label sits on its own line, this many pixels above the colour bar's line


def _layout_legend(
    signed: bool, scale: float, measure: TextMeasurer, prop: FontProperties, avail: float, label: str | None = None
) -> _Legend:
    """Lay out the legend: label, low end, colour bar and high end on one line.

    The bar shrinks to fit; on a narrow image the label moves onto its own line rather than pushing the bar past
    the right edge.
    """
    if label is None:
        label = "relevance (white = 0):" if signed else "relevance:"
    lo, hi = (f"{-scale:.3g}" if signed else "0"), f"{scale:.3g}"
    label_w, lo_w, hi_w = (measure.width(text, prop) for text in (label, lo, hi))
    ends = lo_w + hi_w + 2 * _LEGEND_GAP
    inline = avail - (label_w + 8 + ends) >= _LEGEND_BAR_MIN_PX
    lead = label_w + 8 if inline else 0.0
    bar_w = int(max(8, min(_LEGEND_BAR_PX[0], avail - lead - ends)))
    drop = 0 if inline else round(pt_to_px(_LEGEND_PT) * 1.5)
    return _Legend(label, lo, hi, lo_w, int(MARGIN_PX + lead + lo_w + _LEGEND_GAP), bar_w, drop)


_CELL_PX = 20  # side of one cell of a token matrix
_MATRIX_LABEL_PX = 110  # longest row or column label of a token matrix (longer ones end with "…")
#: Most prompt columns a token matrix draws: beyond, the most relevant ones (a caption line says how many are shown).
MAX_MATRIX_COLUMNS = 64


def normalise_rows(values: np.ndarray) -> np.ndarray:
    """Each row divided by its largest absolute value (an all-zero row stays zero; non-finite values become 0).

    Example:
        >>> normalise_rows(np.array([[1.0, -4.0], [0.0, 0.0]])).tolist()
        [[0.25, -1.0], [0.0, 0.0]]
    """
    values = np.where(np.isfinite(values), np.asarray(values, dtype=np.float64), 0.0)
    peak = np.abs(values).max(axis=1, keepdims=True) if values.size else np.ones((values.shape[0], 1))
    return values / np.where(peak > 0, peak, 1.0)


def render_token_matrix(
    columns: Sequence[str],
    rows: Sequence[str],
    scores: np.ndarray,
    *,
    title: str | None = None,
    caption: str | None = None,
    signed: bool = False,
    merge: bool = True,
    max_columns: int = MAX_MATRIX_COLUMNS,
) -> np.ndarray:
    """Render a matrix of token relevance: one row per explained token, one column per input token.

    A causal LM's per-completion-token view (as inseq shows it): row ``c`` is the map of the ``c``-th completion
    token over the prompt's tokens. Labels are the tokens' text (rows on the left, columns written upwards above the
    grid, each cut with ``…`` past 110 px). **Each row is normalised** by its largest absolute score
    (:func:`normalise_rows`), so every row uses the whole colour scale: colours compare the prompt tokens within a
    row, not the rows' magnitudes; that largest absolute score is written at the row's right end (``max``).
    Colours as :func:`render_token_heatmap`: white-to-red over ``[0, 1]``, or blue-white-red over ``[-1, 1]`` with
    ``signed``.

    Args:
        columns: Input (prompt) tokens, special tokens and padding removed.
        rows: The explained tokens (one per row).
        scores: ``[len(rows), len(columns)]`` relevance; non-finite scores are drawn as 0.
        title: Bold heading.
        caption: Line(s) under the title.
        signed: Use the diverging colour map centred at 0.
        merge: Merge the columns' sub-word pieces into words first (summing each row's scores, see
            :func:`merge_wordpieces`).
        max_columns: Most columns drawn: a longer prompt keeps its most relevant columns (largest normalised
            score over the rows), in their order, and a caption line says how many are shown.

    Returns:
        RGB image ``[H, W, 3]`` uint8, at least a TensorBoard card wide (350 px), wider with many columns.

    Raises:
        ValueError: If ``scores`` is not ``[len(rows), len(columns)]``.

    Example:
        >>> import numpy as np
        >>> img = render_token_matrix(["k1=v2", "k3=v0", "?", "k1"], ["v2", "</s>"],
        ...                           np.array([[0.9, 0.1, 0.0, 0.3], [0.2, 0.2, 0.1, 0.1]]), title="demo")
        >>> img.dtype == np.uint8, img.shape[1], img.shape[2]
        (True, 350, 3)
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (len(rows), len(columns)):
        raise ValueError(f"scores must be [{len(rows)}, {len(columns)}] (rows x columns), got {values.shape}")
    values = np.where(np.isfinite(values), values, 0.0)  # before merging: a non-finite piece must not hide its word
    words = [str(t) for t in columns]
    if merge and words and len(rows):
        merged = [merge_wordpieces(words, row) for row in values]
        words, values = merged[0][0], np.stack([row for _, row in merged])
    normalised = normalise_rows(values) if len(rows) else values.reshape(0, len(words))
    peaks = [f"{peak:.2g}" for peak in (np.abs(values).max(axis=1) if values.size else np.zeros(len(rows)))]
    caption_lines = [caption] if caption else []
    if len(words) > max_columns:
        keep = np.sort(np.argsort(-np.abs(normalised).max(axis=0), kind="stable")[:max_columns])
        caption_lines.append(f"{max_columns} of {len(words)} prompt tokens shown (the most relevant)")
        words, normalised = [words[i] for i in keep], normalised[:, keep]
    with RENDER_LOCK:
        return _draw_token_matrix(words, [str(r) for r in rows], normalised, peaks, title,
                                  "\n".join(caption_lines) or None, signed)


def _draw_token_matrix(
    columns: list[str],
    rows: list[str],
    values: np.ndarray,
    peaks: list[str],
    title: str | None,
    caption: str | None,
    signed: bool,
) -> np.ndarray:
    label_prop, legend_prop = font(_LEGEND_PT), font(_LEGEND_PT)
    measure = TextMeasurer()

    def label(text: str) -> str:
        return truncate_to_width(_visible(text), lambda t: measure.width(t, label_prop), _MATRIX_LABEL_PX)

    row_labels, column_labels = [label(r) for r in rows], [label(c) for c in columns]
    row_w = max([int(math.ceil(measure.width(t, label_prop))) for t in row_labels] + [0]) + 6
    column_h = max([int(math.ceil(measure.width(t, label_prop))) for t in column_labels] + [0]) + 6
    grid_w = _CELL_PX * len(columns)
    peak_w = max([int(math.ceil(measure.width(t, label_prop))) for t in [*peaks, "max"]]) + 6
    width = max(CARD_WIDTH_PX, 2 * MARGIN_PX + row_w + grid_w + peak_w)
    avail = width - 2 * MARGIN_PX
    header, header_h = layout_header(title, caption, measure, avail)
    grid_top = MARGIN_PX + header_h + column_h
    grid_left = MARGIN_PX + row_w
    grid_bottom = grid_top + _CELL_PX * max(1, len(rows))
    legend = _layout_legend(signed, 1.0, measure, legend_prop, avail,
                            "relevance / row max (white = 0):" if signed else "relevance / row max:")
    legend_top = grid_bottom + 12 + legend.label_drop
    height = legend_top + _LEGEND_BAR_PX[1] + 8 + MARGIN_PX

    cmap = score_colormap(signed)
    canvas_rgb = np.full((height, width, 3), 255, dtype=np.uint8)
    cells = np.repeat(np.repeat(score_rgb(cmap, values, 1.0, signed), _CELL_PX, axis=0), _CELL_PX, axis=1)
    cells[_CELL_PX - 1 :: _CELL_PX] = cells[:, _CELL_PX - 1 :: _CELL_PX] = 255  # a 1-px white seam between cells
    canvas_rgb[grid_top : grid_top + cells.shape[0], grid_left : grid_left + cells.shape[1]] = cells
    _paint_legend_bar(canvas_rgb, legend, legend_top, cmap, signed)

    fig, canvas = blank_figure(width, height)
    fig.figimage(canvas_rgb, xo=0, yo=0, origin="upper", resize=False)
    for text, prop, baseline in header:
        put_text(fig, text, MARGIN_PX, baseline, prop, color="black")
    ascent, descent = measure.ascent_descent(label_prop)
    for r, text in enumerate(row_labels):  # right-aligned against the grid, centred on the row
        baseline = grid_top + r * _CELL_PX + (_CELL_PX - 1 - (ascent + descent)) / 2 + ascent
        put_text(fig, text, grid_left - 4 - measure.width(text, label_prop), baseline, label_prop, color="black")
    for c, text in enumerate(column_labels):  # written upwards from just above the grid, centred on the column
        put_vertical_text(fig, text, grid_left + c * _CELL_PX + (_CELL_PX - 1) / 2, grid_top - 3, label_prop,
                          color="black")
    for r, text in enumerate(peaks):  # each row's scale: what its darkest cell stands for
        baseline = grid_top + r * _CELL_PX + (_CELL_PX - 1 - (ascent + descent)) / 2 + ascent
        put_text(fig, text, grid_left + grid_w + 5, baseline, label_prop, color="#666666")
    if rows:
        put_text(fig, "max", grid_left + grid_w + 5, grid_top - 4, label_prop, color="#666666")
    if not rows:
        put_text(fig, "(no completion tokens)", MARGIN_PX, grid_top + _CELL_PX * 0.72, font(_TOKEN_PT, style="italic"),
                 color="#666666")
    _label_legend(fig, legend, legend_top, legend_prop)
    return figure_to_rgb(canvas)


def _paint_legend_bar(canvas_rgb: np.ndarray, legend: _Legend, top: int, cmap: Colormap, signed: bool) -> None:
    """The legend's colour bar into the background image (its top edge at ``top``)."""
    gradient = np.linspace(-1.0 if signed else 0.0, 1.0, legend.bar_w)
    canvas_rgb[top : top + _LEGEND_BAR_PX[1], legend.bar_x : legend.bar_x + legend.bar_w] = score_rgb(
        cmap, gradient, 1.0, signed
    )[None]


def _label_legend(fig: Figure, legend: _Legend, top: int, prop: FontProperties) -> None:
    """The legend's label and the colour bar's end values (the bar's top edge at ``top``)."""
    baseline = top + _LEGEND_BAR_PX[1] - 1
    put_text(fig, legend.label, MARGIN_PX, baseline - legend.label_drop, prop, color="#333333")
    put_text(fig, legend.lo, legend.bar_x - _LEGEND_GAP - legend.lo_w, baseline, prop, color="#333333")
    put_text(fig, legend.hi, legend.bar_x + legend.bar_w + _LEGEND_GAP, baseline, prop, color="#333333")


def _visible(token: str) -> str:
    # Tokens are drawn on one line: make control characters visible instead of breaking the layout.
    return token.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎").replace("\t", "→")
