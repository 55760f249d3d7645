"""Pure rendering functions: explanation scores (numpy) in, RGB uint8 ``[H, W, 3]`` images or escaped HTML out.

Everything uses matplotlib's object API with the Agg canvas (no ``pyplot``, no global state), so it works
headless and from any thread. :mod:`~lightning_xai.viz.text` (token heatmaps), :mod:`~lightning_xai.viz.image`
(image overlays) and :mod:`~lightning_xai.viz.html` draw with the shared fixed-dpi canvas helpers of
``viz._canvas``; :mod:`~lightning_xai.viz.tokens` holds the tokenizer conventions (word-piece merging);
:func:`render_heatmaps` renders one validation's probe samples once for every sink.
"""

from lightning_xai.viz.compose import compose_grid, evolution_strip
from lightning_xai.viz.html import token_heatmap_html
from lightning_xai.viz.image import render_image_overlay
from lightning_xai.viz.render import render_heatmaps
from lightning_xai.viz.text import render_token_heatmap
from lightning_xai.viz.tokens import merge_wordpieces

__all__ = [
    "compose_grid",
    "evolution_strip",
    "merge_wordpieces",
    "render_heatmaps",
    "render_image_overlay",
    "render_token_heatmap",
    "token_heatmap_html",
]
