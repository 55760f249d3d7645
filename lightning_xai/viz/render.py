"""Render the probe samples of one validation ONCE, for every sink: PNG heatmaps, comparison grids, token HTML.

A causal LM's heatmap samples may also carry per-completion-token maps (:class:`~lightning_xai.records.
CompletionTokens`): each method's is rendered as one matrix (:func:`~lightning_xai.viz.text.render_token_matrix`),
a :class:`~lightning_xai.records.Heatmap` of view ``"completion_tokens"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from lightning_xai.records import Heatmap, ProbeSample

#: Called with (where, error) when one heatmap cannot be rendered; the others are still rendered.
OnRenderError = Callable[[str, BaseException], None]
_GRID_GAP = 8  # white pixels between the cells of a comparison grid
#: Most methods side by side in a comparison grid: a wider grid is unreadable even at actual size.
MAX_GRID_COLUMNS = 3
#: The tallest image a TensorBoard IMAGES card shows whole (it scrolls beyond): a stack of card-wide token
#: heatmaps up to this height is read there at actual size, with no "Show actual image size".
CARD_MAX_HEIGHT_PX = 1024


def grid_columns(images: Sequence[np.ndarray], stack_up_to: int | None = None) -> int:
    """How many images per row a comparison grid of ``images`` gets.

    A balanced grid of at most :data:`MAX_GRID_COLUMNS` columns (11 images: 4 rows of 3, 2 of them in the last
    one; 4 images: 2 x 2). With ``stack_up_to``, one column instead while the stack is at most that many pixels
    tall (with the grid's gaps).

    Example:
        >>> import numpy as np
        >>> [grid_columns([np.zeros((300, 474, 3), np.uint8)] * n) for n in (1, 2, 3, 4, 5, 11)]
        [1, 2, 3, 2, 3, 3]
        >>> text = np.zeros((150, 350, 3), np.uint8)
        >>> grid_columns([text] * 3, stack_up_to=1024), grid_columns([text] * 11, stack_up_to=1024)
        (1, 3)
    """
    count = len(images)
    if count <= 1:
        return 1
    if stack_up_to is not None and sum(image.shape[0] for image in images) + _GRID_GAP * (count - 1) <= stack_up_to:
        return 1
    rows = math.ceil(count / MAX_GRID_COLUMNS)
    return math.ceil(count / rows)


def _raise(_where: str, error: BaseException) -> None:
    raise error


def render_sample(sample: ProbeSample, method: str, epoch: int | None = None) -> Heatmap:
    """The heatmap of one method's map of one sample: an image overlay or a token heatmap (+ its HTML).

    The title names the method, the sample and, when given, the epoch: a TensorBoard image card shows the step
    only, and the heatmaps of a validation are logged at a step of their own.

    Example:
        >>> import numpy as np
        >>> sample = ProbeSample(0, "pos", "pos", 0.9, "pos", tokens=["good", "film"],
        ...                      maps={"grad_sam": np.array([0.9, 0.1])})
        >>> heatmap = render_sample(sample, "grad_sam", epoch=2)
        >>> heatmap.rgb.dtype.name, heatmap.rgb.shape[2], "film" in heatmap.html, "sample 0 · epoch 2" in heatmap.html
        ('uint8', 3, True, True)
    """
    from lightning_xai.viz import render_image_overlay, render_token_heatmap, token_heatmap_html

    values = np.asarray(sample.maps[method])
    signed = sample.signed.get(method, False)
    title = f"{method} · sample {sample.index}" + ("" if epoch is None else f" · epoch {epoch}")
    if sample.image is not None:
        rgb = render_image_overlay(sample.image, values, title=title, caption=sample.caption(), signed=signed)
        return Heatmap(method, sample.index, rgb)
    tokens = sample.tokens or []
    rgb = render_token_heatmap(tokens, values, title=title, caption=sample.caption(), signed=signed)
    html = token_heatmap_html(tokens, values, title=title, caption=sample.caption(), signed=signed)
    return Heatmap(method, sample.index, rgb, html)


def render_completion_tokens(sample: ProbeSample, method: str, epoch: int | None = None) -> Heatmap:
    """A causal LM sample's per-completion-token maps of ``method`` as one matrix (view ``"completion_tokens"``).

    Rows are normalised (see :func:`~lightning_xai.viz.text.render_token_matrix`).

    Example:
        >>> import numpy as np
        >>> from lightning_xai.records import CompletionTokens
        >>> view = CompletionTokens(["v2"], total=3, maps={"attn_lrp": np.array([[0.1, 0.9]])})
        >>> sample = ProbeSample(0, None, None, None, "completion", tokens=["k1=v2", "k1"], completion_tokens=view)
        >>> heatmap = render_completion_tokens(sample, "attn_lrp")
        >>> heatmap.view, heatmap.rgb.shape[1]
        ('completion_tokens', 350)
    """
    from lightning_xai.viz.text import render_token_matrix

    view = sample.completion_tokens
    if view is None or method not in view.maps:
        raise ValueError(f"probe sample {sample.index} has no per-completion-token maps of {method!r}")
    title = f"{method} · sample {sample.index}" + ("" if epoch is None else f" · epoch {epoch}")
    shown = f"first {len(view.tokens)} of {view.total}" if view.truncated else f"all {view.total}"
    caption = f"one row per completion token ({shown}), columns: the prompt"
    rgb = render_token_matrix(sample.tokens or [], view.tokens, np.asarray(view.maps[method]), title=title,
                              caption=caption, signed=sample.signed.get(method, False))
    return Heatmap(method, sample.index, rgb, view="completion_tokens")


def render_heatmaps(
    samples: Sequence[ProbeSample], epoch: int | None = None, on_error: OnRenderError = _raise
) -> list[Heatmap]:
    """Every method's heatmap of every sample, plus one comparison grid per sample with several methods.

    Args:
        samples: the probe samples with their maps.
        epoch: shown in the titles.
        on_error: called with ``(where, error)`` when a heatmap fails to render (default: raise); the others
            are still rendered.

    Returns:
        Heatmaps in sample order, each sample's methods first, then its comparison grid (``method=None``): the
        methods in order, row by row, at most :data:`MAX_GRID_COLUMNS` per row (see :func:`grid_columns`); token
        heatmaps are stacked in one column while the stack fits a TensorBoard card (:data:`CARD_MAX_HEIGHT_PX`).
        Then a causal LM sample's per-completion-token matrices, one per method (view ``"completion_tokens"``).

    Example:
        >>> import numpy as np
        >>> maps = {name: np.linspace(0, 1, 4) for name in ("a", "b", "c", "d", "e")}
        >>> sample = ProbeSample(0, "pos", "pos", 0.9, "pos", tokens=["a", "good", "film", "indeed"], maps=maps)
        >>> rendered = render_heatmaps([sample])
        >>> [h.method for h in rendered], [h.rgb.shape[1] for h in rendered[:5]]
        (['a', 'b', 'c', 'd', 'e', None], [350, 350, 350, 350, 350])
        >>> rendered[-1].rgb.shape[1]  # five short texts: one column of card-wide heatmaps
        350
    """
    from lightning_xai.viz import compose_grid

    heatmaps: list[Heatmap] = []
    for sample in samples:
        rendered = []
        for method in sample.maps:
            try:
                rendered.append(render_sample(sample, method, epoch))
            except Exception as error:
                on_error(f"rendering the {method!r} heatmap", error)
        heatmaps.extend(rendered)
        if len(rendered) > 1:  # every method side by side, for comparing them on one sample
            images = [h.rgb for h in rendered]
            # Card-wide token heatmaps stacked are read in a TensorBoard card at actual size, and the same words
            # line up from one method to the next; when the stack gets too tall, a grid of at most 3 per row.
            stack = CARD_MAX_HEIGHT_PX if sample.image is None else None
            grid = compose_grid(images, columns=grid_columns(images, stack_up_to=stack), gap=_GRID_GAP)
            heatmaps.append(Heatmap(None, sample.index, grid))
        for method in sample.completion_tokens.maps if sample.completion_tokens is not None else ():
            try:
                heatmaps.append(render_completion_tokens(sample, method, epoch))
            except Exception as error:
                on_error(f"rendering the {method!r} per-completion-token matrix", error)
    return heatmaps
