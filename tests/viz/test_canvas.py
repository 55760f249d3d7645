"""The shared Agg helpers (viz._canvas) and the tokenizer conventions (viz.tokens)."""

import numpy as np

from lightning_xai.viz import _canvas, text, tokens
from lightning_xai.viz._canvas import TextMeasurer, font, layout_header, wrap_words


def test_merge_wordpieces_keeps_its_old_paths():
    import lightning_xai.viz as viz

    assert viz.merge_wordpieces is text.merge_wordpieces is tokens.merge_wordpieces


def test_layout_header_wraps_title_and_caption():
    measure = TextMeasurer(300)
    assert layout_header(None, "", measure, 268) == ([], 0)
    lines, height = layout_header("a long title " * 8, "caption", measure, 268)
    assert len(lines) > 2 and lines[-1][0] == "caption"
    assert all(measure.width(line, prop) <= 268 for line, prop, _ in lines)
    baselines = [baseline for _, _, baseline in lines]
    assert baselines == sorted(baselines) and baselines[0] > _canvas.MARGIN_PX and height > baselines[-1] - 16
    assert lines[0][1].get_weight() == "bold" and lines[-1][1].get_weight() == "normal"


def test_wrap_words_keeps_newlines_and_truncates_long_words():
    measure = TextMeasurer()
    prop = font(10.0)
    lines = wrap_words("first line\r\nsecond\t" + "x" * 300, lambda s: measure.width(s, prop), 200)
    assert lines[0] == "first line" and lines[1] == "second" and lines[2].endswith("…")
    assert all(measure.width(line, prop) <= 200 for line in lines)


def test_score_colours():
    cmap = _canvas.score_colormap(signed=False)

    def rgb(score: float) -> np.ndarray:
        return _canvas.score_rgb(cmap, score, 1.0, signed=False)

    assert np.array_equal(rgb(-5.0), rgb(0.0)) and np.array_equal(rgb(2.0), rgb(1.0))  # clipped to the scale
    assert _canvas.text_colour(rgb(1.0)) == "white" and _canvas.text_colour(rgb(0.0)) == "black"


def test_card_sizes_are_tensorboards():
    # The IMAGES card of TensorBoard's frontend: 350 px wide whatever the window, its image at most 1024 px tall
    # before the card scrolls. Heatmaps are drawn to these sizes (shown at actual size); if TensorBoard changes
    # them, this says so (tests/sinks/test_tensorboard_browser.py measures them in a real browser).
    import re
    import zipfile
    from pathlib import Path

    import pytest

    tensorboard = pytest.importorskip("tensorboard")
    from lightning_xai.viz.render import CARD_MAX_HEIGHT_PX

    with zipfile.ZipFile(Path(tensorboard.__file__).parent / "webfiles.zip") as bundle:
        script = bundle.read("index.js").decode("utf-8", "replace")
    loader = script[script.index("aria-label=\"Toggle actual size\"") :][:6000]  # the tf-image-loader template
    host = re.search(r":host \{[^}]*\}", loader).group(0)
    assert f"width: {_canvas.CARD_WIDTH_PX}px;" in host
    container = re.search(r"\n\s*#main-image-container \{[^}]*\}", loader).group(0)  # not the actual-size rule
    assert f"max-height: {CARD_MAX_HEIGHT_PX}px;" in container
