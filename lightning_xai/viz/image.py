"""Image relevance overlays rendered to RGB arrays (headless, thread-safe, no pyplot)."""

from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from lightning_xai.viz._canvas import (
    MARGIN_PX,
    RENDER_LOCK,
    SEQUENTIAL_IMAGE_CMAP,
    TextMeasurer,
    blank_figure,
    figure_to_rgb,
    font,
    layout_header,
    put_text,
    resolve_vmax,
    score_colormap,
)

__all__ = ["render_image_overlay"]

_AXES_LONG_SIDE_PX = 360  # the image is scaled to this size: tiny 8x8 digits become readable, big images fit
_AXES_MIN_SIDE_PX = 48  # extreme aspect ratios are stretched rather than collapsing to a line
_MIN_FIGURE_PX = 300  # at least 3 x 3 inches at the fixed 100 dpi
_CBAR_GAP_PX = 12
_CBAR_WIDTH_PX = 14
_CBAR_LABELS_PX = 56  # room for the colour bar's tick labels
_TICK_PT = 8.0


def render_image_overlay(
    image: np.ndarray,
    relevance: np.ndarray,
    *,
    title: str | None = None,
    caption: str | None = None,
    signed: bool = False,
    vmax: float | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Render an image with a relevance heatmap drawn over it, plus a colour bar.

    The relevance grid (e.g. one value per ViT patch) is bilinearly upsampled (half-pixel aligned, as
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``) to the displayed resolution
    of the image, which is at least ``[H, W]`` (tiny images are shown enlarged with nearest-neighbour pixels).
    Colour scale: with ``signed=False`` the ``jet`` map over ``[0, vmax]`` (negative values drawn as 0) blended
    over the image with constant opacity ``alpha``; with ``signed=True`` the diverging ``RdBu_r`` map over
    ``[-vmax, vmax]`` centred at 0, whose opacity grows with ``|relevance| / vmax`` up to ``alpha`` (0 is white
    in that map, so regions without relevance show the unobstructed image instead of a white veil).

    Args:
        image: ``[H, W, 3]`` (RGB), ``[H, W, 4]`` (alpha ignored), ``[H, W]`` (grayscale) or ``[C, H, W]`` with
            ``C`` in {1, 3} (detected when the first dim is 1 or 3 and the last is not). uint8 is shown as is;
            any other dtype is min-max normalised per image (a constant image is shown grey).
        relevance: 2-D relevance grid ``[h, w]``, any resolution (patch grid or full size). Non-finite values
            are drawn as 0.
        title: Bold heading, e.g. ``"rollout · sample 3"``. Drawn literally (no mathtext).
        caption: Line under the title, e.g. ``"label: 7 · pred: 7 (p=0.98)"``. Drawn literally.
        signed: Use the diverging colour map centred at 0 (for methods whose relevance can be negative).
        vmax: Top of the colour scale. Pass the same value for several methods to compare them on one scale.
            Default: the largest absolute relevance (1.0 if all are 0).
        alpha: Opacity of the heatmap in ``[0, 1]`` (with ``signed=True``: where ``|relevance| >= vmax``).

    Returns:
        RGB image, shape ``[H', W', 3]``, dtype uint8 (at least 300 x 300 pixels).

    Raises:
        ValueError: If ``image`` or ``relevance`` has an unsupported shape, or ``alpha`` is outside ``[0, 1]``.

    Example:
        >>> import numpy as np
        >>> digit = np.random.default_rng(0).random((8, 8))
        >>> img = render_image_overlay(digit, np.eye(2), title="rollout · sample 0")
        >>> img.dtype == np.uint8, img.ndim, img.shape[2]
        (True, 3, 3)
        >>> min(img.shape[:2]) >= 300
        True
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = _display_rgb(image)
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.ndim > 2:  # tolerate singleton batch/channel dims such as [1, h, w]
        rel = rel.reshape([d for d in rel.shape if d != 1] or [1, 1])
    if rel.ndim != 2 or rel.size == 0:
        raise ValueError(f"relevance must be a non-empty 2-D [h, w] array, got shape {np.shape(relevance)}")
    rel = np.where(np.isfinite(rel), rel, 0.0)
    scale = resolve_vmax(rel, vmax)
    with RENDER_LOCK:
        return _draw_overlay(rgb, rel, title, caption, signed, scale, alpha)


def _draw_overlay(
    rgb: np.ndarray,
    rel: np.ndarray,
    title: str | None,
    caption: str | None,
    signed: bool,
    scale: float,
    alpha: float,
) -> np.ndarray:
    img_h, img_w = rgb.shape[:2]
    # Axes keep the image's aspect ratio with the long side fixed, so every figure has a readable size.
    ratio = _AXES_LONG_SIDE_PX / max(img_h, img_w)
    ax_w = max(round(img_w * ratio), _AXES_MIN_SIDE_PX)
    ax_h = max(round(img_h * ratio), _AXES_MIN_SIDE_PX)
    group_w = ax_w + _CBAR_GAP_PX + _CBAR_WIDTH_PX + _CBAR_LABELS_PX
    width = max(_MIN_FIGURE_PX, group_w + 2 * MARGIN_PX)

    header, header_h = layout_header(title, caption, TextMeasurer(width), width - 2 * MARGIN_PX)
    height = max(_MIN_FIGURE_PX, MARGIN_PX + header_h + ax_h + MARGIN_PX)
    # Centre the image + colour bar group in whatever room the minimum figure size leaves.
    ax_left = (width - group_w) // 2
    ax_top = MARGIN_PX + header_h + (height - (MARGIN_PX + header_h + ax_h + MARGIN_PX)) // 2

    cmap = score_colormap(signed, SEQUENTIAL_IMAGE_CMAP)
    norm = Normalize(vmin=-scale if signed else 0.0, vmax=scale, clip=True)
    # Heat computed at the displayed resolution (at least the image's), so it is smooth without resampling.
    heat = _bilinear_resize(rel, max(ax_h, img_h), max(ax_w, img_w))
    heat_rgba = cmap(norm(heat))
    if signed:
        # 0 is white in the diverging map: a constant opacity would wash the whole image out, so fade it instead.
        heat_rgba[..., 3] = alpha * np.clip(np.abs(heat) / scale, 0.0, 1.0)
    else:
        heat_rgba[..., 3] = alpha  # classic CAM look: every value keeps its colour-bar colour

    fig, canvas = blank_figure(width, height)

    def frac(left: float, top: float, w: float, h: float) -> list[float]:
        return [left / width, 1.0 - (top + h) / height, w / width, h / height]

    ax = fig.add_axes(frac(ax_left, ax_top, ax_w, ax_h))
    extent = (0.0, float(img_w), float(img_h), 0.0)
    # Nearest keeps the pixels of tiny images (8x8 digits) crisp; large images are downsampled smoothly.
    image_interp = "nearest" if max(img_h, img_w) <= _AXES_LONG_SIDE_PX else "antialiased"
    ax.imshow(rgb, interpolation=image_interp, extent=extent, aspect="auto")
    ax.imshow(heat_rgba, interpolation="antialiased", extent=extent, aspect="auto")
    ax.set_axis_off()

    cax = fig.add_axes(frac(ax_left + ax_w + _CBAR_GAP_PX, ax_top, _CBAR_WIDTH_PX, ax_h))
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    ticks = [-scale, 0.0, scale] if signed else [0.0, scale / 2, scale]
    cbar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks], fontproperties=font(_TICK_PT))
    cbar.outline.set_linewidth(0.5)

    for text, prop, baseline in header:
        put_text(fig, text, MARGIN_PX, baseline, prop)
    return figure_to_rgb(canvas)


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float ``[H, W, 3]`` in ``[0, 1]`` ready for ``imshow``."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or arr.size == 0:
        raise ValueError(f"image must be [H, W], [H, W, 3|4] or [1|3, H, W], got shape {np.shape(image)}")

    if arr.dtype == np.uint8:
        out = arr.astype(np.float64) / 255.0
    else:
        out = arr.astype(np.float64)
        finite = np.isfinite(out)
        lo, hi = (float(out[finite].min()), float(out[finite].max())) if finite.any() else (0.0, 0.0)
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            out = np.full(out.shape, 0.5)  # constant image: mid grey rather than a division by ~0
        else:
            out = np.clip((np.where(finite, out, lo) - lo) / (hi - lo), 0.0, 1.0)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


def _bilinear_resize(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinearly resize a 2-D array with half-pixel alignment (``align_corners=False`` semantics)."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, pos - i0

    r0, r1, fr = axis(grid.shape[0], out_h)
    c0, c1, fc = axis(grid.shape[1], out_w)
    top = grid[r0][:, c0] * (1.0 - fc) + grid[r0][:, c1] * fc
    bottom = grid[r1][:, c0] * (1.0 - fc) + grid[r1][:, c1] * fc
    return top * (1.0 - fr)[:, None] + bottom * fr[:, None]
