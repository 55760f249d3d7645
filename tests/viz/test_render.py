"""Tests for lightning_xai.viz: word-piece merging, token heatmaps and image overlays."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lightning_xai.records import ProbeSample
from lightning_xai.viz import merge_wordpieces, render_heatmaps, render_image_overlay, render_token_heatmap
from lightning_xai.viz._canvas import CARD_WIDTH_PX
from lightning_xai.viz.image import _bilinear_resize
from lightning_xai.viz.render import CARD_MAX_HEIGHT_PX, grid_columns, render_sample

WHITE = 250  # channel value above which a pixel counts as background


def _assert_rgb(img: np.ndarray) -> None:
    assert isinstance(img, np.ndarray)
    assert img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] > 0 and img.shape[1] > 0


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean [H, W] mask of pixels that differ between two same-sized renders."""
    assert a.shape == b.shape
    return np.abs(a.astype(int) - b.astype(int)).sum(-1) > 0


def _nonwhite(img: np.ndarray) -> np.ndarray:
    return (img < WHITE).any(-1)


# ------------------------------------------------------------------------------------------------ merge_wordpieces


class TestMergeWordpieces:
    tokens = ["the", "play", "##ing", "field"]
    scores = np.array([0.5, 1.0, 3.0, 2.0])

    @pytest.mark.parametrize(
        ("aggregation", "expected"),
        [("sum", [0.5, 4.0, 2.0]), ("mean", [0.5, 2.0, 2.0]), ("max", [0.5, 3.0, 2.0])],
    )
    def test_wordpiece(self, aggregation: str, expected: list[float]) -> None:
        words, values = merge_wordpieces(self.tokens, self.scores, aggregation=aggregation)
        assert words == ["the", "playing", "field"]
        assert values.dtype == np.float64
        np.testing.assert_array_equal(values, expected)

    def test_default_is_sum(self) -> None:
        _, values = merge_wordpieces(self.tokens, self.scores)
        np.testing.assert_array_equal(values, [0.5, 4.0, 2.0])

    def test_byte_bpe(self) -> None:
        words, values = merge_wordpieces(["Ġthe", "Ġplay", "ing"], np.array([1.0, 2.0, 4.0]))
        assert words == ["the", "playing"]
        np.testing.assert_array_equal(values, [1.0, 6.0])

    def test_byte_bpe_first_token_without_marker_starts_a_word(self) -> None:
        # RoBERTa's first word has no leading space, hence no Ġ; punctuation glues to the previous word.
        words, values = merge_wordpieces(["Hello", ",", "Ġwor", "ld"], np.array([1.0, 2.0, 3.0, 4.0]))
        assert words == ["Hello,", "world"]
        np.testing.assert_array_equal(values, [3.0, 7.0])

    def test_sentencepiece(self) -> None:
        words, values = merge_wordpieces(
            ["▁the", "▁play", "ing", "▁field"], np.array([1.0, 2.0, 4.0, 8.0]), aggregation="mean"
        )
        assert words == ["the", "playing", "field"]
        np.testing.assert_array_equal(values, [1.0, 3.0, 8.0])

    def test_no_convention_is_passthrough(self) -> None:
        tokens = ["the", "playing", "field"]
        scores = np.array([1.0, -2.0, 3.0])
        words, values = merge_wordpieces(tokens, scores)
        assert words == tokens
        np.testing.assert_array_equal(values, scores)
        assert values is not scores  # the caller's array is never aliased

    def test_leading_continuation_piece_starts_a_word(self) -> None:
        words, values = merge_wordpieces(["##ing", "the", "##re"], np.array([1.0, 2.0, 3.0]))
        assert words == ["ing", "there"]
        np.testing.assert_array_equal(values, [1.0, 5.0])

    def test_wordpiece_takes_precedence_over_other_markers(self) -> None:
        words, _ = merge_wordpieces(["▁a", "b", "##c"], np.zeros(3))
        assert words == ["▁a", "bc"]

    def test_empty(self) -> None:
        words, values = merge_wordpieces([], np.zeros(0))
        assert words == [] and values.shape == (0,)

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="one entry per token"):
            merge_wordpieces(["a", "b"], np.zeros(3))
        with pytest.raises(ValueError, match="aggregation"):
            merge_wordpieces(["a"], np.zeros(1), aggregation="median")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ token heatmap


class TestTokenHeatmap:
    def test_output_format_and_width(self) -> None:
        img = render_token_heatmap(["a", "b"], np.array([0.1, 0.2]), title="t", caption="c", width_px=640)
        _assert_rgb(img)
        assert img.shape[1] == 640

    def test_long_text_wraps_into_a_taller_image(self) -> None:
        rng = np.random.default_rng(0)
        short = render_token_heatmap([f"word{i}" for i in range(5)], rng.random(5))
        long = render_token_heatmap([f"word{i}" for i in range(300)], rng.random(300))
        assert short.shape[1] == long.shape[1] == CARD_WIDTH_PX == 350
        assert long.shape[0] > 3 * short.shape[0]
        # Wrapping, not overflowing: the right margin stays blank.
        assert not _nonwhite(long[:, -8:]).any()

    def test_overlong_token_does_not_overflow(self) -> None:
        img = render_token_heatmap(["x" * 400, "tail"], np.array([1.0, 1.0]), width_px=300)
        assert img.shape[1] == 300
        assert not _nonwhite(img[:, -8:]).any()

    def test_high_score_is_redder_than_zero_score(self) -> None:
        hot = render_token_heatmap(["word"], np.array([1.0]), vmax=1.0)
        cold = render_token_heatmap(["word"], np.array([0.0]), vmax=1.0)
        box = _changed(hot, cold)  # only the token box differs: the legend is identical on a shared vmax
        assert box.sum() > 200

        def redness(img: np.ndarray) -> float:
            px = img[box].astype(float)
            return float((px[:, 0] - (px[:, 1] + px[:, 2]) / 2).mean())

        assert redness(hot) > redness(cold) + 50

    def test_signed_negative_is_blue_positive_is_red(self) -> None:
        zero = render_token_heatmap(["word"], np.array([0.0]), signed=True, vmax=1.0)
        neg = render_token_heatmap(["word"], np.array([-1.0]), signed=True, vmax=1.0)
        pos = render_token_heatmap(["word"], np.array([1.0]), signed=True, vmax=1.0)
        neg_px = neg[_changed(neg, zero)].astype(float)
        pos_px = pos[_changed(pos, zero)].astype(float)
        assert (neg_px[:, 2] - neg_px[:, 0]).mean() > 50
        assert (pos_px[:, 0] - pos_px[:, 2]).mean() > 50

    def test_unsigned_clips_negative_scores_to_zero(self) -> None:
        neg = render_token_heatmap(["word"], np.array([-1.0]), vmax=1.0)
        zero = render_token_heatmap(["word"], np.array([0.0]), vmax=1.0)
        np.testing.assert_array_equal(neg, zero)

    def test_vmax_sets_the_scale(self) -> None:
        # A score of 1 on a scale of 2 is drawn like a score of 0.5 on a scale of 1.
        a = render_token_heatmap(["word"], np.array([1.0]), vmax=2.0)
        b = render_token_heatmap(["word"], np.array([0.5]), vmax=1.0)
        half = render_token_heatmap(["word"], np.array([0.5]), vmax=2.0)
        box = _changed(a, half)
        assert box.any()
        np.testing.assert_array_equal(a[box], b[box])

    def test_all_zero_scores_render(self) -> None:
        _assert_rgb(render_token_heatmap(["a", "b"], np.zeros(2)))

    def test_merge_renders_words_with_aggregated_scores(self) -> None:
        merged = render_token_heatmap(["play", "##ing"], np.array([0.25, 0.5]), vmax=1.0)
        word = render_token_heatmap(["playing"], np.array([0.75]), vmax=1.0)
        np.testing.assert_array_equal(merged, word)
        unmerged = render_token_heatmap(["play", "##ing"], np.array([0.25, 0.5]), vmax=1.0, merge=False)
        assert not np.array_equal(unmerged, word)

    def test_strings_are_drawn_literally(self) -> None:
        tokens = ["$x$", "<script>", "_a_", "a^b", "\\alpha", "50%", "line\nbreak", "tab\there", ""]
        img = render_token_heatmap(tokens, np.linspace(0, 1, len(tokens)), title="$E=mc^2$ _t_", caption="$$")
        _assert_rgb(img)
        # Mathtext would typeset "$x$" as a lone italic x; literal text keeps the dollar signs and is wider.
        dollar = render_token_heatmap(["$x$"], np.array([1.0]), vmax=1.0)
        plain = render_token_heatmap(["x"], np.array([1.0]), vmax=1.0)
        assert _nonwhite(dollar).sum() > _nonwhite(plain).sum() + 100

    def test_empty_tokens(self) -> None:
        img = render_token_heatmap([], np.zeros(0), title="empty")
        _assert_rgb(img)
        assert img.shape[1] == CARD_WIDTH_PX
        assert _nonwhite(img).any()  # the "(no content tokens)" note and the title are drawn

    def test_deterministic(self) -> None:
        args = (["the", "movie", "was", "good"], np.array([0.1, 0.4, 0.0, 0.9]))
        np.testing.assert_array_equal(render_token_heatmap(*args), render_token_heatmap(*args))

    def test_thread_safe(self) -> None:
        jobs = [([f"t{i}", "x"], np.array([i / 4, 1.0])) for i in range(4)]
        expected = [render_token_heatmap(t, s) for t, s in jobs]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda job: render_token_heatmap(*job), jobs * 2))
        for i, img in enumerate(got):
            np.testing.assert_array_equal(img, expected[i % 4])

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="one entry per token"):
            render_token_heatmap(["a"], np.zeros(2))
        with pytest.raises(ValueError, match="at least 200"):
            render_token_heatmap(["a"], np.zeros(1), width_px=199)

    @pytest.mark.parametrize("width", [200, 260, CARD_WIDTH_PX, 500])
    @pytest.mark.parametrize("signed", [False, True])
    def test_legend_fits_narrow_images(self, width: int, signed: bool) -> None:
        # The signed legend ("relevance (white = 0): -1.23 [bar] 1.23") is wider than a narrow image: its bar
        # shrinks, then its label moves onto a line of its own; nothing is drawn past the right margin.
        tokens, scores = ["good", "bad", "movie"], np.array([-1.234567, 0.5, 2.5e-7])
        img = render_token_heatmap(tokens, scores, title="attn_lrp · sample 12", signed=signed, width_px=width)
        _assert_rgb(img)
        assert img.shape[1] == width and not _nonwhite(img[:, -10:]).any()
        legend = img[-40:].astype(int)
        blue = (legend[..., 2] - legend[..., 0] > 80).any(0).sum()
        red = (legend[..., 0] - legend[..., 2] > 80).any(0).sum()
        assert red > 20 and (blue > 20) == signed  # the whole colour bar is drawn

    def test_a_typical_sample_fits_a_tensorboard_card(self) -> None:
        # A 42-piece review (what all-MiniLM-L6-v2's WordPiece tokenizer makes of it), title and two-line caption.
        tokens = ("the acting was surprisingly good and the sound ##track un ##forget ##table , but the plot drag "
                  "##ged on far too long and the ending felt rushed ; i would still recommend it to anyone who "
                  "enjoys slow - burning thrill ##ers .").split()
        scores = np.random.default_rng(0).random(len(tokens)) ** 3
        caption = "label: positive · pred: positive (p=0.87) · explained: positive"
        img = render_token_heatmap(tokens, scores, title="grad_sam · sample 3", caption=caption)
        wide = render_token_heatmap(tokens, scores, title="grad_sam · sample 3", caption=caption, width_px=900)
        assert img.shape[1] == CARD_WIDTH_PX and 250 < img.shape[0] < 360  # several lines of words, at actual size
        assert wide.shape[0] < img.shape[0]  # the old 900-px layout: fewer, longer lines
        assert not _nonwhite(img[:, -10:]).any()


# ------------------------------------------------------------------------------------------------ render_heatmaps


def _text_sample(methods: list[str], tokens: list[str] | None = None) -> ProbeSample:
    tokens = tokens or ["the", "play", "##ing", "field", "was", "great"]
    rng = np.random.default_rng(0)
    return ProbeSample(0, "pos", "pos", 0.9, "pos", tokens=tokens, maps={m: rng.random(len(tokens)) for m in methods})


class TestRenderHeatmaps:
    def test_word_pieces_are_merged_as_before(self) -> None:
        # The heatmap shows words, each scored with the sum of its pieces' scores (viz.tokens.merge_wordpieces).
        pieces = ProbeSample(0, "pos", "pos", 0.9, "pos", tokens=["play", "##ing"], maps={"m": np.array([0.25, 0.5])})
        word = ProbeSample(0, "pos", "pos", 0.9, "pos", tokens=["playing"], maps={"m": np.array([0.75])})
        np.testing.assert_array_equal(render_sample(pieces, "m").rgb, render_sample(word, "m").rgb)
        assert ">playing</span>" in render_sample(pieces, "m").html

    def test_the_epoch_is_in_the_title(self) -> None:
        # A TensorBoard image card shows the step only: the heatmap itself says which epoch it is.
        sample = _text_sample(["m"])
        first, second = render_sample(sample, "m", epoch=1), render_sample(sample, "m", epoch=2)
        rows = np.nonzero(_changed(first.rgb, second.rgb).any(1))[0]
        assert rows.size and rows.max() < 40  # the title line only
        assert "m · sample 0 · epoch 2" in second.html

    def test_every_method_is_card_wide(self) -> None:
        rendered = render_heatmaps([_text_sample(["grad_sam", "random", "legrad"])])
        assert [h.method for h in rendered] == ["grad_sam", "random", "legrad", None]
        assert all(h.rgb.shape[1] == CARD_WIDTH_PX for h in rendered[:3])

    def test_short_text_comparison_is_one_column_of_card_wide_heatmaps(self) -> None:
        rendered = render_heatmaps([_text_sample(["grad_sam", "random"])])
        grid, singles = rendered[-1].rgb, [h.rgb for h in rendered[:2]]
        assert grid.shape[1] == CARD_WIDTH_PX and grid.shape[0] == sum(s.shape[0] for s in singles) + 8
        np.testing.assert_array_equal(grid[: singles[0].shape[0]], singles[0])

    def test_many_text_methods_make_a_grid_of_at_most_three_per_row(self) -> None:
        methods = [f"method_{i}" for i in range(11)]
        tokens = [f"word{i}" for i in range(40)]
        rendered = render_heatmaps([_text_sample(methods, tokens)])
        grid, single = rendered[-1].rgb, rendered[0].rgb
        assert sum(h.rgb.shape[0] for h in rendered[:11]) > CARD_MAX_HEIGHT_PX  # too tall to stack
        assert grid.shape[1] == 3 * CARD_WIDTH_PX + 2 * 8  # 3 columns
        assert grid.shape[0] == 4 * single.shape[0] + 3 * 8  # 4 rows (3, 3, 3, 2)
        np.testing.assert_array_equal(grid[: single.shape[0], :CARD_WIDTH_PX], single)

    def test_image_comparison_is_a_grid_of_at_most_three_per_row(self) -> None:
        rng = np.random.default_rng(0)
        methods = [f"method_{i}" for i in range(11)]
        sample = ProbeSample(0, "7", "7", 0.9, "7", image=rng.random((16, 16, 3)),
                             maps={m: rng.random((4, 4)) for m in methods})
        rendered = render_heatmaps([sample])
        grid, single = rendered[-1].rgb, rendered[0].rgb
        assert grid.shape[1] == 3 * single.shape[1] + 2 * 8  # was 11 in one row (5,294 px wide)
        assert grid.shape[0] == 4 * single.shape[0] + 3 * 8

    @pytest.mark.parametrize(("count", "columns"), [(1, 1), (2, 2), (3, 3), (4, 2), (5, 3), (6, 3), (7, 3), (11, 3)])
    def test_grid_columns_balance_the_rows(self, count: int, columns: int) -> None:
        images = [np.zeros((300, 474, 3), np.uint8)] * count
        assert grid_columns(images) == columns
        tall = [np.zeros((CARD_MAX_HEIGHT_PX // 2, CARD_WIDTH_PX, 3), np.uint8)] * count
        assert grid_columns(tall, stack_up_to=CARD_MAX_HEIGHT_PX) == (1 if count == 1 else columns)
        short = [np.zeros((40, CARD_WIDTH_PX, 3), np.uint8)] * count
        assert grid_columns(short, stack_up_to=CARD_MAX_HEIGHT_PX) == 1


# ------------------------------------------------------------------------------------------------ image overlay


class TestImageOverlay:
    def test_input_layouts_give_the_same_rgb_output(self) -> None:
        rng = np.random.default_rng(0)
        hwc = rng.random((32, 32, 3)).astype(np.float32)
        rel = rng.random((4, 4))
        from_hwc = render_image_overlay(hwc, rel)
        from_chw = render_image_overlay(np.moveaxis(hwc, -1, 0), rel)
        _assert_rgb(from_hwc)
        np.testing.assert_array_equal(from_hwc, from_chw)

        gray = hwc[..., 0]
        from_gray = render_image_overlay(gray, rel)
        _assert_rgb(from_gray)
        np.testing.assert_array_equal(from_gray, render_image_overlay(gray[None], rel))
        np.testing.assert_array_equal(from_gray, render_image_overlay(gray[..., None], rel))

        as_uint8 = render_image_overlay((hwc * 255).astype(np.uint8), rel)
        _assert_rgb(as_uint8)

    def test_tiny_image_gives_a_readable_figure(self) -> None:
        img = render_image_overlay(np.arange(64.0).reshape(8, 8), np.ones((2, 2)), title="digit")
        _assert_rgb(img)
        assert img.shape[0] >= 300 and img.shape[1] >= 300

    @pytest.mark.parametrize("signed", [False, True])
    def test_hot_patch_changes_its_region_most(self, signed: bool) -> None:
        image = np.full((64, 64), 0.3)  # constant image: rendered grey, must not crash
        zero = render_image_overlay(image, np.zeros((4, 4)), vmax=1.0, signed=signed)
        full = render_image_overlay(image, np.ones((4, 4)), vmax=1.0, signed=signed)
        rows, cols = np.nonzero(_changed(full, zero))  # everything the heatmap covers = the image axes
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert bottom - top > 200 and right - left > 200

        for r, c in [(0, 0), (3, 3)]:
            rel = np.zeros((4, 4))
            rel[r, c] = 1.0
            hot = render_image_overlay(image, rel, vmax=1.0, signed=signed)
            diff = np.abs(hot.astype(int) - zero.astype(int)).sum(-1)[top:bottom, left:right].astype(float)
            h, w = diff.shape
            patch = diff[r * h // 4 : (r + 1) * h // 4, c * w // 4 : (c + 1) * w // 4]
            outside = diff.copy()
            outside[r * h // 4 : (r + 1) * h // 4, c * w // 4 : (c + 1) * w // 4] = np.nan
            assert patch.mean() > 5 * np.nanmean(outside)
            # Bilinear falloff reaches at most half a patch beyond the hot one: the far half stays untouched.
            far = diff[h // 2 :, w // 2 :] if (r, c) == (0, 0) else diff[: h // 2, : w // 2]
            assert far.max() == 0

    def test_signed_colours(self) -> None:
        image = np.full((32, 32, 3), 0.5)
        zero = render_image_overlay(image, np.zeros((2, 2)), signed=True, vmax=1.0)
        for value, (more, less) in [(1.0, (0, 2)), (-1.0, (2, 0))]:
            img = render_image_overlay(image, np.full((2, 2), value), signed=True, vmax=1.0)
            px = img[_changed(img, zero)].astype(float)
            assert (px[:, more] - px[:, less]).mean() > 30

    def test_constant_and_degenerate_inputs(self) -> None:
        _assert_rgb(render_image_overlay(np.zeros((3, 16, 16)), np.zeros((2, 2))))
        _assert_rgb(render_image_overlay(np.full((16, 16), 7.0), np.array([[np.nan, np.inf], [1.0, 0.0]])))
        _assert_rgb(render_image_overlay(np.ones((16, 16)), np.ones((1, 1)), title="$x$ _a_", caption="<b>"))
        _assert_rgb(render_image_overlay(np.ones((4, 200)), np.ones((1, 10))))  # extreme aspect ratio

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="image"):
            render_image_overlay(np.zeros((2, 16, 16, 3)), np.zeros((2, 2)))
        with pytest.raises(ValueError, match="relevance"):
            render_image_overlay(np.zeros((16, 16)), np.zeros(4))
        with pytest.raises(ValueError, match="alpha"):
            render_image_overlay(np.zeros((16, 16)), np.zeros((2, 2)), alpha=1.5)


@pytest.mark.parametrize(("shape", "out"), [((2, 2), (8, 8)), ((3, 5), (7, 11)), ((14, 14), (224, 224))])
def test_bilinear_resize_matches_torch(shape: tuple[int, int], out: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    grid = np.random.default_rng(0).normal(size=shape)
    ours = _bilinear_resize(grid, *out)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=out, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-10)


# ------------------------------------------------------------------------------------------------ token matrices


def test_token_matrix_rows_are_normalised_each_cell_its_own_and_the_row_scale_written_beside_it() -> None:
    from lightning_xai.viz.text import render_token_matrix

    columns, rows = ["k1=v2", "k3=v0", "k1"], ["v2", "</s>"]
    base = render_token_matrix(columns, rows, np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    moved = render_token_matrix(columns, rows, np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    scaled = render_token_matrix(columns, rows, np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 1.0]]))
    _assert_rgb(base)
    assert base.shape == moved.shape == scaled.shape and base.shape[1] == CARD_WIDTH_PX
    cells = np.argwhere(_changed(base, moved))  # moving row 1's peak changes two cells of that row only
    assert cells[:, 0].max() - cells[:, 0].min() < 20 and cells[:, 1].max() - cells[:, 1].min() < 3 * 20
    text = np.argwhere(_changed(base, scaled))  # scaling row 0: same colours, only its written scale ("5" vs "1")
    assert text.size and text[:, 1].min() > cells[:, 1].max()
    with pytest.raises(ValueError, match="rows x columns"):
        render_token_matrix(columns, rows, np.zeros((3, 2)))


def test_render_heatmaps_draws_one_matrix_per_method_of_a_causal_lm_sample() -> None:
    from lightning_xai.records import CompletionTokens

    view = CompletionTokens(["v2"], total=3, maps={"a": np.array([[0.1, 0.9]]), "b": np.array([[0.5, 0.5, 0.5]])})
    sample = ProbeSample(0, None, None, None, "completion", tokens=["k1=v2", "k1"], maps={"a": np.array([0.2, 0.8])},
                         completion_tokens=view)
    errors = []
    rendered = render_heatmaps([sample], epoch=1, on_error=lambda where, error: errors.append(where))
    assert [(h.method, h.view) for h in rendered] == [("a", "map"), ("a", "completion_tokens")]
    assert len(errors) == 1 and "'b'" in errors[0]  # b's map does not fit the prompt: reported, a is still drawn


def test_token_matrix_draws_a_non_finite_piece_as_0_without_hiding_its_word() -> None:
    """Non-finite scores are zeroed before sub-word pieces merge: the word keeps its finite piece's score."""
    from lightning_xai.viz.text import render_token_matrix

    columns, rows = ["good", "film", "##s"], ["v"]
    with_nan = render_token_matrix(columns, rows, np.array([[0.2, 0.5, np.nan]]))
    zeroed = render_token_matrix(columns, rows, np.array([[0.2, 0.5, 0.0]]))
    hidden = render_token_matrix(columns, rows, np.array([[0.2, 0.0, 0.0]]))
    assert np.array_equal(with_nan, zeroed) and not np.array_equal(with_nan, hidden)
