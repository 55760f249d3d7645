"""Token heatmaps as HTML: coloured ``<span>``s, every token, title and caption escaped.

Used for W&B (``wandb.Html``), the files sink and the static run report. Nothing user-provided ever reaches the
output unescaped: tokens such as ``<script>alert(1)</script>`` or ``"onmouseover=`` render as text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from lightning_xai.viz._canvas import resolve_vmax, score_colormap, score_rgb, text_colour
from lightning_xai.viz.tokens import Aggregation, merge_wordpieces

__all__ = ["token_heatmap_html"]


def token_heatmap_html(
    tokens: Sequence[str],
    scores: np.ndarray,
    *,
    title: str | None = None,
    caption: str | None = None,
    signed: bool = False,
    vmax: float | None = None,
    merge: bool = True,
    aggregation: Aggregation = "sum",
    standalone: bool = False,
) -> str:
    """Render tokens coloured by relevance as an HTML fragment (or a whole page with ``standalone=True``).

    Colours match :func:`~lightning_xai.viz.render_token_heatmap`: sequential reds for non-negative methods,
    diverging red/blue centred at 0 for signed ones; each span's ``title`` shows the exact score on hover.

    Args:
        tokens: content tokens (special tokens and padding already removed).
        scores: one score per token.
        title: bold heading (escaped).
        caption: line under the heading (escaped).
        signed: diverging colour map for signed methods (LRP).
        vmax: shared colour scale; default ``max(|scores|)``.
        merge: merge word pieces into words first (see :func:`~lightning_xai.viz.merge_wordpieces`).
        aggregation: how piece scores combine into a word score.
        standalone: wrap in ``<!DOCTYPE html>`` with a UTF-8 meta tag.

    Returns:
        HTML text.

    Example:
        >>> import numpy as np
        >>> out = token_heatmap_html(["<script>", "ok"], np.array([1.0, 0.0]))
        >>> "<script>" in out, "&lt;script&gt;" in out
        (False, True)
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(tokens) != values.shape[0]:
        raise ValueError(f"{len(tokens)} tokens but {values.shape[0]} scores")
    words, word_scores = merge_wordpieces(tokens, values, aggregation=aggregation) if merge else (list(tokens), values)
    scale = resolve_vmax(np.asarray(word_scores, dtype=np.float64), vmax)
    cmap = score_colormap(signed)
    spans = []
    for word, score in zip(words, word_scores, strict=True):
        rgb = score_rgb(cmap, float(score), scale, signed)
        background = "#" + "".join(f"{int(c):02x}" for c in rgb)
        spans.append(
            f'<span title="{float(score):.4g}" style="background:{background};color:{text_colour(rgb)};'
            f'padding:1px 3px;margin:1px;border-radius:3px;display:inline-block">{html.escape(word)}</span>'
        )
    parts = ['<div style="font-family:DejaVu Sans,Arial,sans-serif;line-height:1.9;max-width:60em">']
    if title:
        parts.append(f"<div style=\"font-weight:bold\">{html.escape(title)}</div>")
    if caption:
        parts.append(f'<div style="color:#444;font-size:90%">{html.escape(caption)}</div>')
    parts.append("<div>" + (" ".join(spans) if spans else "<em>(no content tokens)</em>") + "</div></div>")
    fragment = "".join(parts)
    if standalone:
        return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{fragment}</body></html>'
    return fragment
