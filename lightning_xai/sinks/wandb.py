"""Weights & Biases: image overlays, HTML token heatmaps, one table per epoch, best-epoch summaries.

Logged through the Lightning ``WandbLogger`` (``log_metrics`` adds ``trainer/global_step``, so Lightning owns the
step). ``define_metric`` is called once per key so each run summary shows the best epoch of every metric
(``min`` for lower-is-better metrics such as deletion AUC, ``max`` otherwise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink, logger_class_names


def top_tokens(sample: ProbeSample, method: str, k: int = 5) -> str:
    """The ``k`` most relevant tokens of a text sample (word pieces as they are), most relevant first."""
    if sample.tokens is None or method not in sample.maps:
        return ""
    values = np.asarray(sample.maps[method], dtype=float).reshape(-1)
    order = np.argsort(-values, kind="stable")[:k]
    return ", ".join(sample.tokens[i] for i in order)


class WandbSink(Sink):
    """Writes to a Lightning ``WandbLogger`` (works offline: ``WANDB_MODE=offline``)."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        self._defined: set[str] = set()

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        """Lightning's ``WandbLogger`` (either package)."""
        return "WandbLogger" in logger_class_names(logger)

    def log_epoch(self, report: EpochReport) -> None:
        """Images, HTML heatmaps and the probe table in one ``log`` call at the trainer's global step."""
        import wandb

        from lightning_xai.viz import token_heatmap_html

        run = self.logger.experiment
        for key, higher in report.higher_is_better.items():
            if key not in self._defined:
                run.define_metric(key, summary="max" if higher else "min")
                self._defined.add(key)
        captions = {sample.index: sample.caption() for sample in report.samples}
        payload: dict[str, Any] = {}
        for tag, image in report.images.items():
            index = int(tag.rsplit("_", 1)[-1]) if tag.rsplit("_", 1)[-1].isdigit() else None
            payload[tag] = wandb.Image(image, caption=captions.get(index, tag))
        methods = report.methods()
        for sample in report.samples:
            if sample.tokens is None:
                continue
            for method in methods:
                page = token_heatmap_html(sample.tokens, np.asarray(sample.maps[method]), title=f"{method} · sample "
                                          f"{sample.index}", caption=sample.caption(),
                                          signed=sample.signed.get(method, False))
                payload[f"{report.prefix}{method}/tokens/sample_{sample.index:02d}"] = wandb.Html(page)
        columns = ["sample", "input", "label", "prediction", "probability", "explained"] + [
            f"{method} top tokens" for method in methods
        ]
        rows = []
        for sample in report.samples:
            shown: Any = " ".join(sample.tokens) if sample.tokens is not None else (
                wandb.Image(report.images.get(f"{report.prefix}{methods[0]}/heatmap/sample_{sample.index:02d}"))
                if methods and f"{report.prefix}{methods[0]}/heatmap/sample_{sample.index:02d}" in report.images
                else ""
            )
            rows.append(
                [sample.index, shown, sample.label, sample.prediction, sample.probability, sample.explained]
                + [top_tokens(sample, method) for method in methods]
            )
        payload[f"{report.prefix}probe_samples"] = wandb.Table(columns=columns, data=rows)
        self.logger.log_metrics(payload, step=report.step)
