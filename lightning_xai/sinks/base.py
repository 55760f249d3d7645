"""Sinks: where the per-epoch explanation record goes, one file per logger type.

Scalars are ALSO logged with ``pl_module.log`` by the callback so ``ModelCheckpoint``/``EarlyStopping`` can
monitor them; sinks add what loggers cannot take as plain scalars: heatmaps, HTML, tables, histograms, files.
Sinks run on global rank zero only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def logger_class_names(logger: Any) -> set[str]:
    """Class names in the logger's MRO: matches ``lightning.pytorch`` and ``pytorch_lightning`` loggers alike."""
    return {cls.__name__ for cls in type(logger).__mro__}


@dataclass(frozen=True)
class ProbeSample:
    """One probe sample with every method's map, as shown on dashboards.

    Attributes:
        index: position in the probe set (stable across epochs).
        label: class name of the label, when the batch has labels.
        prediction: predicted class name.
        probability: predicted class probability.
        explained: name of the explained class.
        tokens: text: the content tokens (special tokens and padding removed).
        image: vision: the input image ``[C, H, W]`` (model input space).
        maps: method -> relevance over ``tokens`` (text, 1-D) or over the patch grid (vision, ``[rows, cols]``).
        signed: method -> whether its relevance is signed.
    """

    index: int
    label: str | None
    prediction: str | None
    probability: float | None
    explained: str
    tokens: list[str] | None = None
    image: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)

    def caption(self) -> str:
        """``label: x · pred: y (p=0.87) · explained: y``."""
        parts = [] if self.label is None else [f"label: {self.label}"]
        if self.prediction is not None:
            probability = "" if self.probability is None else f" (p={self.probability:.2f})"
            parts.append(f"pred: {self.prediction}{probability}")
        parts.append(f"explained: {self.explained}")
        return " · ".join(parts)


@dataclass(frozen=True)
class EpochReport:
    """Everything the monitor computed at one scheduled validation.

    Attributes:
        epoch: trainer epoch.
        step: trainer global step (the x-axis loggers use).
        prefix: log-key prefix (``"xai/"``).
        scalars: logged key -> value (``xai/<method>/<metric>``).
        higher_is_better: logged key -> direction of the metric.
        samples: the probe samples with maps (the first ``num_heatmaps``).
        images: tag -> rendered heatmap ``[H, W, 3]`` uint8.
        relevance: method -> every content-token relevance of the whole probe set (for histograms).
    """

    epoch: int
    step: int
    prefix: str
    scalars: dict[str, float]
    higher_is_better: dict[str, bool]
    samples: list[ProbeSample]
    images: dict[str, np.ndarray]
    relevance: dict[str, np.ndarray] = field(default_factory=dict)

    def methods(self) -> list[str]:
        """Methods with maps in this report, in first-seen order."""
        seen: dict[str, None] = {}
        for sample in self.samples:
            seen.update(dict.fromkeys(sample.maps))
        return list(seen)


class Sink(ABC):
    """Writes an :class:`EpochReport` for one logger. Called on global rank zero only."""

    @classmethod
    @abstractmethod
    def accepts(cls, logger: Any) -> bool:
        """True when this sink can write to ``logger``."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @abstractmethod
    def log_epoch(self, report: EpochReport) -> None:
        """Write what this sink shows of one epoch."""
