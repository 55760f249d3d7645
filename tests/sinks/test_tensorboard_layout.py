"""The custom-scalars layout of the TensorBoard sink: anchored tags, one chart per metric, gains apart."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from lightning_xai.keys import LogKeys, exact_tag_regex
from lightning_xai.records import EpochReport
from lightning_xai.sinks.tensorboard import TensorBoardSink, custom_scalars_layout

METHODS = ("grad_sam", "random", "legrad", "attn_lrp")
METRICS = ("deletion_auc", "insertion_auc", "aopc")


def _logged_keys(prefix: str = "xai/", methods=METHODS, metrics=METRICS) -> list[str]:
    """Every key a monitor with these methods (``random`` among them) and metrics logs."""
    keys = LogKeys(prefix)
    logged = [keys.score(m, k) for m in methods for k in metrics]
    logged += [keys.gain(m, k) for m in methods if m != "random" for k in metrics]
    logged += [keys.stability(m) for m in methods] + [keys.skipped(m) for m in methods]
    logged += [keys.degenerate(m) for m in methods]
    logged += [keys.agreement(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
    return logged


def _charts(layout: dict) -> dict[tuple[str, str], list[str]]:
    return {(category, chart): spec[1] for category, charts in layout.items() for chart, spec in charts.items()}


def _frontend_filter(regexes: list[str]) -> re.Pattern[str]:
    # What TensorBoard's multi-line card sends the custom-scalars backend, which tests it with re.match.
    return re.compile(regexes[0] if len(regexes) == 1 else "|".join(f"({r})" for r in regexes))


def test_every_tag_is_anchored_and_matches_exactly_one_logged_key():
    keys = _logged_keys()
    # What else lands in a Lightning run's event file: none of it may leak into a chart but ``epoch``.
    event_file = [*keys, "epoch", "val_loss", "train_loss", "xai/grad_sam/deletion_auc_gain_vs_random_extra"]
    charts = _charts(custom_scalars_layout(keys, "xai/"))
    for (category, title), regexes in charts.items():
        for regex in regexes:
            assert regex.startswith("^") and regex.endswith("$"), (category, title, regex)
            matched = [tag for tag in event_file if re.match(regex, tag)]
            assert len(matched) == 1, (regex, matched)
            assert regex == exact_tag_regex(matched[0])
    charted = [tag for regexes in charts.values() for regex in regexes for tag in event_file if re.match(regex, tag)]
    assert sorted(charted) == sorted([*keys, "epoch"])  # every key in exactly one chart


def test_one_chart_per_metric_and_the_gains_in_their_own_category():
    keys = _logged_keys()
    layout = custom_scalars_layout(keys, "xai/")
    assert list(layout) == ["explanation quality", "gain vs random", "agreement and stability", "health"]
    assert sorted(layout["explanation quality"]) == sorted(METRICS)
    assert sorted(layout["gain vs random"]) == sorted(f"{m}_gain_vs_random" for m in METRICS)
    for metric in METRICS:
        assert layout["explanation quality"][metric] == [
            "Multiline", sorted(exact_tag_regex(f"xai/{m}/{metric}") for m in METHODS)
        ]
        assert layout["gain vs random"][f"{metric}_gain_vs_random"] == [
            "Multiline", sorted(exact_tag_regex(f"xai/{m}/{metric}_gain_vs_random") for m in METHODS if m != "random")
        ]
    assert sorted(layout["agreement and stability"]) == ["agreement", "stability"]
    assert len(layout["agreement and stability"]["agreement"][1]) == 6  # every pair of the 4 methods
    assert sorted(layout["health"]) == ["degenerate_samples", "epoch", "skipped_samples"]


def test_the_regexes_tensorboard_builds_select_exactly_each_charts_keys():
    # The bug this fixes: unanchored, the deletion_auc chart also drew every deletion_auc_gain_vs_random.
    keys = _logged_keys()
    for (_, title), regexes in _charts(custom_scalars_layout(keys, "xai/")).items():
        pattern = _frontend_filter(regexes)
        selected = sorted(tag for tag in [*keys, "epoch"] if pattern.match(tag))
        assert len(selected) == len(regexes), title
        if title == "deletion_auc":
            assert selected == sorted(f"xai/{m}/deletion_auc" for m in METHODS)


@pytest.mark.parametrize("prefix", ["xai/", "val/xai.", "a+b/"])
def test_prefixes_and_method_names_with_regex_characters_are_escaped(prefix):
    keys = _logged_keys(prefix, methods=("grad_sam", "random", "m.v2", "ig(x)"), metrics=("deletion_auc",))
    layout = custom_scalars_layout(keys, prefix)
    lookalikes = [key.replace(".", "X").replace("+", "") for key in keys]
    for regex in (r for regexes in _charts(layout).values() for r in regexes if r != "^epoch$"):
        assert sum(bool(re.match(regex, key)) for key in keys) == 1, regex
        assert not any(re.match(regex, key) for key in lookalikes if key not in keys), regex
    assert sorted(layout["explanation quality"]) == ["deletion_auc"]


def test_keys_of_no_known_kind_keep_a_chart_each_and_nothing_means_no_layout():
    assert custom_scalars_layout([], "xai/") == {}
    layout = custom_scalars_layout(["xai/grad_sam/deletion_auc", "xai/custom/a/b"], "xai/", epoch_tag=None)
    assert layout["other"] == {"xai/custom/a/b": ["Multiline", ["^xai/custom/a/b$"]]}
    assert "health" not in layout


class _Writer:
    def __init__(self):
        self.layouts, self.images = [], []

    def add_custom_scalars(self, layout):
        self.layouts.append(layout)

    def add_image(self, tag, image, global_step, dataformats):
        self.images.append((tag, image.shape, global_step, dataformats))

    def add_histogram(self, *args, **kwargs):
        pass

    def flush(self):
        pass


def _report(epoch: int, scalars: dict[str, float]) -> EpochReport:
    return EpochReport(epoch=epoch, step=4 * epoch + 3, scalars=scalars, higher_is_better={k: False for k in scalars},
                       samples=[], heatmaps=[], keys=LogKeys("xai/"), relevance={"grad_sam": np.zeros(0)})


def test_the_sink_registers_the_layout_again_only_when_new_keys_appear():
    writer = _Writer()
    sink = TensorBoardSink(SimpleNamespace(experiment=writer))
    first = {"xai/grad_sam/deletion_auc": 0.4, "xai/random/deletion_auc": 0.5}
    sink.log_epoch(_report(0, first))
    sink.log_epoch(_report(1, first))
    assert len(writer.layouts) == 1
    sink.log_epoch(_report(2, {**first, "xai/grad_sam/stability": 0.9}))
    assert len(writer.layouts) == 2
    assert writer.layouts[-1]["agreement and stability"]["stability"] == ["Multiline", ["^xai/grad_sam/stability$"]]
    assert writer.layouts[-1]["explanation quality"] == writer.layouts[0]["explanation quality"]
