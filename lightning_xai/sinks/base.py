"""Sinks: where rendered heatmaps go, one file per logger type.

Scalars never go through sinks: they use ``pl_module.log`` so ``ModelCheckpoint``/``EarlyStopping`` can monitor
them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


def logger_class_names(logger: Any) -> set[str]:
    """Class names in the logger's MRO: matches ``lightning.pytorch`` and ``pytorch_lightning`` loggers alike."""
    return {cls.__name__ for cls in type(logger).__mro__}


class Sink(ABC):
    """Writes rendered images for one logger. Called on global rank zero only."""

    @classmethod
    @abstractmethod
    def accepts(cls, logger: Any) -> bool:
        """True when this sink can write to ``logger``."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @abstractmethod
    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        """Write HWC uint8 RGB images under their tags."""
