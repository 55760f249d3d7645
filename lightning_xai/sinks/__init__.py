"""Sinks for the per-epoch explanation record: one file per logger plus one registration line here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink
from lightning_xai.sinks.files import FilesSink
from lightning_xai.sinks.tensorboard import TensorBoardSink
from lightning_xai.sinks.wandb import WandbSink

_SINKS: list[type[Sink]] = []


def register_sink(cls: type[Sink]) -> type[Sink]:
    """Register a sink class (usable as a class decorator)."""
    if cls not in _SINKS:
        _SINKS.append(cls)
    return cls


def sinks_for(loggers: Iterable[Any]) -> list[Sink]:
    """One sink per logger that some registered sink accepts."""
    return [cls(logger) for logger in loggers for cls in _SINKS if cls.accepts(logger)]


register_sink(TensorBoardSink)
register_sink(WandbSink)

__all__ = ["EpochReport", "FilesSink", "ProbeSample", "Sink", "TensorBoardSink", "WandbSink", "register_sink",
           "sinks_for"]
