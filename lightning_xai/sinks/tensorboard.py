"""TensorBoard: heatmaps as images, relevance histograms, and a custom-scalars dashboard.

The text plugin sanitises HTML, so token heatmaps are rendered PNGs. A custom-scalars layout is registered once
per run: for each metric one chart with every method's curve, so the CUSTOM SCALARS tab is a ready
explanation-quality dashboard.
"""

from __future__ import annotations

from typing import Any

from lightning_xai.keys import LogKeys
from lightning_xai.sinks.base import EpochReport, Sink


def custom_scalars_layout(keys: list[str], prefix: str) -> dict[str, dict[str, list[Any]]]:
    """``{category: {chart: ["Multiline", [keys of every method]]}}`` for ``add_custom_scalars``.

    Example:
        >>> layout = custom_scalars_layout(["xai/grad_sam/deletion_auc", "xai/random/deletion_auc"], "xai/")
        >>> layout["explanation quality"]["deletion_auc"]
        ['Multiline', ['xai/grad_sam/deletion_auc', 'xai/random/deletion_auc']]
    """
    log_keys = LogKeys(prefix)
    charts: dict[str, list[str]] = {}
    for key in keys:
        chart = log_keys.chart(key)
        charts.setdefault(key if chart is None else chart[0], []).append(key)
    return {"explanation quality": {chart: ["Multiline", tags] for chart, tags in sorted(charts.items())}}


class TensorBoardSink(Sink):
    """Writes to a Lightning ``TensorBoardLogger``'s ``SummaryWriter`` (either package)."""

    logger_class = "TensorBoardLogger"

    def log_epoch(self, report: EpochReport) -> None:
        """Images, histograms, and the custom-scalars layout (re-registered only when new keys appear)."""
        writer = self.logger.experiment
        if self.new_keys(report.scalars):
            writer.add_custom_scalars(custom_scalars_layout(sorted(self._seen_keys), report.prefix))
        for heatmap in report.heatmaps:
            tag = report.keys.heatmap(heatmap.method, heatmap.sample)
            writer.add_image(tag, heatmap.rgb, global_step=report.step, dataformats="HWC")
        for method, values in report.relevance.items():
            if values.size:
                writer.add_histogram(report.keys.relevance(method), values, global_step=report.step)
        writer.flush()
