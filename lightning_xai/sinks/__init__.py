"""Sinks for the per-epoch explanation record: one file per logger plus one registration line here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lightning_xai.keys import LogKeys
from lightning_xai.sinks.base import EpochReport, Heatmap, ProbeSample, Sink
from lightning_xai.sinks.files import FilesSink
from lightning_xai.sinks.tensorboard import TensorBoardSink
from lightning_xai.sinks.wandb import WandbSink

if TYPE_CHECKING:
    from lightning_xai._runtime import ErrorPolicy
    from lightning_xai.run import EpochResult

_SINKS: list[type[Sink]] = []


def register_sink(cls: type[Sink]) -> type[Sink]:
    """Register a sink class (usable as a class decorator)."""
    if cls not in _SINKS:
        _SINKS.append(cls)
    return cls


def sinks_for(loggers: Iterable[Any], files_dir: str | None = None, run_id: str | None = None) -> list[Sink]:
    """Every registered sink's instances for a run: one per accepted logger, plus files when ``files_dir`` is set."""
    loggers = list(loggers)
    return [sink for cls in _SINKS for sink in cls.for_run(loggers, files_dir, run_id)]


def publish(
    sinks: Iterable[Sink],
    result: EpochResult,
    scalars: Mapping[str, float],
    *,
    epoch: int,
    step: int,
    keys: LogKeys,
    policy: ErrorPolicy,
) -> EpochReport:
    """Render the result's heatmaps ONCE and hand one :class:`EpochReport` to every sink (each failure isolated).

    Args:
        sinks: where the report goes (rank zero).
        result: what :func:`~lightning_xai.run.explain_probe_set` produced.
        scalars: the values logged at this validation.
        epoch: trainer epoch.
        step: trainer global step.
        keys: the run's log keys.
        policy: what a failing sink or heatmap does.

    Returns:
        The report that was handed out.
    """
    from lightning_xai.viz.render import render_heatmaps

    report = EpochReport(
        epoch=epoch,
        step=step,
        scalars=dict(scalars),
        higher_is_better={key: result.higher_is_better.get(key, False) for key in scalars},
        samples=result.samples,
        heatmaps=render_heatmaps(result.samples, epoch, on_error=policy.handle),
        relevance=result.relevance,
        keys=keys,
    )
    for sink in sinks:
        try:
            sink.log_epoch(report)
        except Exception as error:
            policy.handle(f"the {type(sink).__name__}", error)
    return report


register_sink(TensorBoardSink)
register_sink(WandbSink)
register_sink(FilesSink)

__all__ = ["EpochReport", "FilesSink", "Heatmap", "ProbeSample", "Sink", "TensorBoardSink", "WandbSink",
           "publish", "register_sink", "sinks_for"]
