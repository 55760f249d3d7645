"""Sinks: where the per-epoch explanation record goes, one file per logger type.

Scalars are ALSO logged with ``pl_module.log`` by the callback so ``ModelCheckpoint``/``EarlyStopping`` can
monitor them; sinks add what loggers cannot take as plain scalars: heatmaps, HTML, tables, histograms, files.
Sinks run on global rank zero only. They read the structured :class:`~lightning_xai.records.EpochReport` (heatmaps
already rendered, keys from :mod:`lightning_xai.keys`) and parse nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

from lightning_xai.records import EpochReport, Heatmap, ProbeSample

__all__ = ["EpochReport", "Heatmap", "ProbeSample", "Sink", "logger_class_names"]


def logger_class_names(logger: Any) -> set[str]:
    """Class names in the logger's MRO: matches ``lightning.pytorch`` and ``pytorch_lightning`` loggers alike."""
    return {cls.__name__ for cls in type(logger).__mro__}


class Sink(ABC):
    """Writes an :class:`EpochReport` for one logger. Called on global rank zero only.

    A sink is registered with :func:`lightning_xai.sinks.register_sink`; :meth:`for_run` decides how many
    instances a run gets (default: one per logger that :meth:`accepts`).
    """

    #: Class name of the Lightning logger this sink writes to (matched in both Lightning packages).
    logger_class: ClassVar[str | None] = None

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        """True when this sink can write to ``logger`` (default: ``logger_class`` is in the logger's MRO)."""
        return cls.logger_class is not None and cls.logger_class in logger_class_names(logger)

    @classmethod
    def for_run(cls, loggers: Iterable[Any], files_dir: str | None = None, run_id: str | None = None) -> list[Sink]:
        """The instances of this sink for a run with ``loggers`` (the files directory when files are on, the run)."""
        return [cls(logger) for logger in loggers if cls.accepts(logger)]

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self._seen_keys: set[str] = set()

    def new_keys(self, keys: Iterable[str]) -> list[str]:
        """The keys this sink has not seen before, in order; they count as seen from now on.

        Example:
            >>> class Nothing(Sink):
            ...     def log_epoch(self, report): ...
            >>> sink = Nothing(logger=None)
            >>> sink.new_keys(["a", "b"]), sink.new_keys(["b", "c"])
            (['a', 'b'], ['c'])
        """
        fresh = [key for key in dict.fromkeys(keys) if key not in self._seen_keys]
        self._seen_keys.update(fresh)
        return fresh

    @abstractmethod
    def log_epoch(self, report: EpochReport) -> None:
        """Write what this sink shows of one epoch."""
