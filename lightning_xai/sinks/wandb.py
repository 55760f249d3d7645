"""Weights & Biases: image overlays, HTML token heatmaps, one table per epoch, best-epoch summaries.

Logged through the Lightning ``WandbLogger`` (``log_metrics`` adds ``trainer/global_step``, so Lightning owns the
step). ``define_metric`` is called once per key so each run summary shows the best epoch of every metric
(``min`` for lower-is-better metrics such as deletion AUC, ``max`` otherwise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink


def top_tokens(sample: ProbeSample, method: str, k: int = 5) -> str:
    """The ``k`` most relevant tokens of a text sample (word pieces as they are), most relevant first."""
    if sample.tokens is None or method not in sample.maps:
        return ""
    values = np.asarray(sample.maps[method], dtype=float).reshape(-1)
    order = np.argsort(-values, kind="stable")[:k]
    return ", ".join(sample.tokens[i] for i in order)


class WandbSink(Sink):
    """Writes to a Lightning ``WandbLogger`` of either package (works offline: ``WANDB_MODE=offline``)."""

    logger_class = "WandbLogger"

    def log_epoch(self, report: EpochReport) -> None:
        """Images, HTML heatmaps and the probe table in one ``log`` call at the trainer's global step."""
        import wandb

        run = self.logger.experiment
        for key in self.new_keys(report.higher_is_better):
            run.define_metric(key, summary="max" if report.higher_is_better[key] else "min")
        keys = report.keys
        captions = {sample.index: sample.caption() for sample in report.samples}
        payload: dict[str, Any] = {}
        for heatmap in report.heatmaps:
            tag = keys.heatmap(heatmap.method, heatmap.sample)
            payload[tag] = wandb.Image(heatmap.rgb, caption=captions.get(heatmap.sample, tag))
            if heatmap.html is not None and heatmap.method is not None:
                payload[keys.tokens(heatmap.method, heatmap.sample)] = wandb.Html(heatmap.html)
        methods = report.methods()
        columns = ["sample", "input", "label", "prediction", "probability", "explained"] + [
            f"{method} top tokens" for method in methods
        ]
        rows = []
        for sample in report.samples:
            first = report.heatmap(methods[0], sample.index) if methods else None
            shown: Any = " ".join(sample.tokens) if sample.tokens is not None else (
                wandb.Image(first.rgb) if first is not None else ""
            )
            rows.append(
                [sample.index, shown, sample.label, sample.prediction, sample.probability, sample.explained]
                + [top_tokens(sample, method) for method in methods]
            )
        payload[keys.probe_table()] = wandb.Table(columns=columns, data=rows)
        self.logger.log_metrics(payload, step=report.step)
