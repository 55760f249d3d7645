"""TensorBoard: heatmaps as images, relevance histograms, and a custom-scalars dashboard.

The text plugin sanitises HTML, so token heatmaps are rendered PNGs, drawn as wide as an IMAGES card (350 px) so
the card shows them at their actual size. A custom-scalars layout is registered once per run (and again when new
keys appear), with four categories (see :meth:`~lightning_xai.keys.LogKeys.dashboard`):

* ``explanation quality``: one chart per metric, one line per method;
* ``gain vs random``: one chart per metric, each method's gain over the ``Random`` baseline;
* ``agreement and stability``: a ``stability`` chart and an ``agreement`` chart (one line per pair of methods);
* ``health``: skipped and degenerate sample counts, and the ``epoch`` of every step.

A causal LM's per-completion-token matrices are images too (``xai/<method>/completion_tokens/sample_NN``).

TensorBoard's Multiline charts select their lines by regular expression, so every tag is written anchored
(``^xai/grad_sam/deletion_auc$``): a chart shows exactly its keys (unanchored, ``deletion_auc`` would also draw
``deletion_auc_gain_vs_random``).

The x-axis of custom scalars is the global step (or wall time); TensorBoard has no epoch axis for them. Lightning
logs ``epoch`` as a scalar at every step it logs metrics, the explanation scalars' steps included, so the
``health`` category holds an ``epoch`` chart: hover a step there to read its epoch.
"""

from __future__ import annotations

from typing import Any

from lightning_xai.keys import DASHBOARD_CATEGORIES, HEALTH_CATEGORY, LogKeys, exact_tag_regex
from lightning_xai.sinks.base import EpochReport, Heatmap, Sink

#: The scalar Lightning logs with every ``log_metrics`` call that has no explicit step (the current epoch).
LIGHTNING_EPOCH_TAG = "epoch"
#: Category of keys under the prefix that are none of the monitor's (kept on the dashboard, one chart each).
OTHER_CATEGORY = "other"


def custom_scalars_layout(
    keys: list[str], prefix: str, epoch_tag: str | None = LIGHTNING_EPOCH_TAG
) -> dict[str, dict[str, list[Any]]]:
    """``{category: {chart: ["Multiline", [anchored tag regexes]]}}`` for ``SummaryWriter.add_custom_scalars``.

    Args:
        keys: the logged scalar keys (see :mod:`lightning_xai.keys`).
        prefix: their prefix.
        epoch_tag: a scalar holding the epoch of each step, charted in ``health`` (None: no such chart).

    Returns:
        The categories in a fixed order (quality, gains, agreement and stability, health), charts sorted by title,
        each chart's tags sorted; every tag is a regular expression matching exactly one key.

    Example:
        >>> layout = custom_scalars_layout(
        ...     ["xai/grad_sam/deletion_auc", "xai/random/deletion_auc", "xai/grad_sam/deletion_auc_gain_vs_random"],
        ...     "xai/")
        >>> layout["explanation quality"]["deletion_auc"]
        ['Multiline', ['^xai/grad_sam/deletion_auc$', '^xai/random/deletion_auc$']]
        >>> layout["gain vs random"]["deletion_auc_gain_vs_random"]
        ['Multiline', ['^xai/grad_sam/deletion_auc_gain_vs_random$']]
        >>> layout["health"]["epoch"]
        ['Multiline', ['^epoch$']]
    """
    log_keys = LogKeys(prefix)
    charts: dict[str, dict[str, list[str]]] = {category: {} for category in (*DASHBOARD_CATEGORIES, OTHER_CATEGORY)}
    for key in sorted(set(keys)):
        category, chart = log_keys.dashboard(key) or (OTHER_CATEGORY, key)
        charts[category].setdefault(chart, []).append(key)
    if epoch_tag is not None and any(charts.values()):
        charts[HEALTH_CATEGORY].setdefault(epoch_tag, []).append(epoch_tag)
    return {
        category: {
            chart: ["Multiline", [exact_tag_regex(tag) for tag in tags]] for chart, tags in sorted(by_chart.items())
        }
        for category, by_chart in charts.items()
        if by_chart
    }


def add_encoded_image(writer: Any, tag: str, heatmap: Heatmap, step: int) -> None:
    """``writer.add_image`` of ``heatmap`` with the PNG the other sinks share (encoded once, see ``Heatmap.png``).

    ``SummaryWriter.add_image`` would encode the array again, at zlib level 6; the event holds the same pixels
    either way. Any other writer (tensorboardX's, which has protos of its own; a stand-in) gets the array.
    """
    try:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboardX alone: Lightning hands over its writer
        SummaryWriter = None  # type: ignore[assignment,misc]  # noqa: N806
    if SummaryWriter is None or not isinstance(writer, SummaryWriter) or not hasattr(writer, "_get_file_writer"):
        writer.add_image(tag, heatmap.rgb, global_step=step, dataformats="HWC")
        return

    height, width = heatmap.rgb.shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=heatmap.png)
    # what SummaryWriter.add_image does after encoding
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class TensorBoardSink(Sink):
    """Writes to a Lightning ``TensorBoardLogger``'s ``SummaryWriter`` (either package)."""

    logger_class = "TensorBoardLogger"

    def log_epoch(self, report: EpochReport) -> None:
        """Images, histograms, and the custom-scalars layout (re-registered only when new keys appear)."""
        writer = self.logger.experiment
        if self.new_keys(report.scalars):
            writer.add_custom_scalars(custom_scalars_layout(sorted(self._seen_keys), report.prefix))
        for heatmap in report.heatmaps:
            tag = report.keys.heatmap(heatmap.method, heatmap.sample, heatmap.view)
            add_encoded_image(writer, tag, heatmap, report.step)
        for method, values in report.relevance.items():
            if values.size:
                writer.add_histogram(report.keys.relevance(method), values, global_step=report.step)
        writer.flush()
