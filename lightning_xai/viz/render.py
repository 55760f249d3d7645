"""Render the probe samples of one validation ONCE, for every sink: PNG heatmaps, comparison grids, token HTML."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lightning_xai.records import Heatmap, ProbeSample

#: Called with (where, error) when one heatmap cannot be rendered; the others are still rendered.
OnRenderError = Callable[[str, BaseException], None]


def _raise(_where: str, error: BaseException) -> None:
    raise error


def render_sample(sample: ProbeSample, method: str, epoch: int | None = None) -> Heatmap:
    """The heatmap of one method's map of one sample: an image overlay or a token heatmap (+ its HTML).

    Example:
        >>> import numpy as np
        >>> sample = ProbeSample(0, "pos", "pos", 0.9, "pos", tokens=["good", "film"],
        ...                      maps={"grad_sam": np.array([0.9, 0.1])})
        >>> heatmap = render_sample(sample, "grad_sam", epoch=2)
        >>> heatmap.rgb.dtype.name, heatmap.rgb.shape[2], "film" in heatmap.html
        ('uint8', 3, True)
    """
    from lightning_xai.viz import render_image_overlay, render_token_heatmap, token_heatmap_html

    values = np.asarray(sample.maps[method])
    signed = sample.signed.get(method, False)
    title = f"{method} · sample {sample.index}"
    if sample.image is not None:
        rgb = render_image_overlay(sample.image, values, title=title, caption=sample.caption(), signed=signed)
        return Heatmap(method, sample.index, rgb)
    tokens = sample.tokens or []
    rgb = render_token_heatmap(tokens, values, title=title, caption=sample.caption(), signed=signed)
    page_title = title if epoch is None else f"{title} · epoch {epoch}"
    html = token_heatmap_html(tokens, values, title=page_title, caption=sample.caption(), signed=signed)
    return Heatmap(method, sample.index, rgb, html)


def render_heatmaps(
    samples: Sequence[ProbeSample], epoch: int | None = None, on_error: OnRenderError = _raise
) -> list[Heatmap]:
    """Every method's heatmap of every sample, plus one comparison grid per sample with several methods.

    Args:
        samples: the probe samples with their maps.
        epoch: shown in the HTML titles.
        on_error: called with ``(where, error)`` when a heatmap fails to render (default: raise); the others
            are still rendered.

    Returns:
        Heatmaps in sample order, each sample's methods first, then its comparison grid (``method=None``).
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
            grid = compose_grid([h.rgb for h in rendered], columns=1 if sample.tokens is not None else None)
            heatmaps.append(Heatmap(None, sample.index, grid))
    return heatmaps
