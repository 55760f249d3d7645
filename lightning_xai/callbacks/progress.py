"""Plain progress lines for logs that are not a terminal (CI, ``nohup``, a notebook's captured output).

Lightning's progress bars redraw one terminal line; written to a file they print nothing useful until the run ends.
:class:`LineProgress` prints one line per training epoch and one per validation instead, and for each validation an
:class:`~lightning_xai.ExplanationMonitor` explained, one line with the best method per metric.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from lightning.pytorch import Callback

from lightning_xai.keys import LogKeys
from lightning_xai.scoring import metric_name

__all__ = ["LineProgress", "explanation_line"]


def _number(value: Any) -> str:
    value = float(value.item() if hasattr(value, "item") else value)
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _scalars(metrics: Mapping[str, Any], prefix: str) -> str:
    """``name value`` pairs of the trainer's logged scalars (ours excluded: they get their own line)."""
    pairs = []
    for name in sorted(metrics):
        if name.startswith(prefix) or name == "epoch":
            continue
        value = metrics[name]
        if hasattr(value, "numel") and value.numel() != 1:
            continue
        pairs.append(f"{name} {_number(value)}")
    return " · ".join(pairs)


def explanation_line(values: Mapping[str, float], higher_is_better: Mapping[str, bool], prefix: str = "xai/") -> str:
    """One line summing up one validation's explanation scores: the best method per metric, random beside it.

    Args:
        values: logged key -> value (one entry of ``ExplanationMonitor.history``).
        higher_is_better: metric name -> direction (metrics missing here are taken as lower-is-better).
        prefix: the monitor's key prefix.

    Example:
        >>> explanation_line({"xai/grad_sam/deletion_auc": 0.39, "xai/legrad/deletion_auc": 0.35,
        ...                   "xai/random/deletion_auc": 0.46, "xai/legrad/degenerate_samples": 2.0},
        ...                  {"deletion_auc": False})
        'best deletion_auc (lower is better): legrad 0.35 (random 0.46) · degenerate maps: legrad 2'
    """
    keys = LogKeys(prefix)
    scores: dict[str, dict[str, float]] = {}
    degenerate = []
    for key, value in values.items():
        parsed = keys.parse(key)
        if parsed is None:
            continue
        if parsed.kind == "score":
            scores.setdefault(parsed.metric, {})[parsed.method] = float(value)
        elif parsed.kind == "degenerate" and value:
            degenerate.append(f"{parsed.method} {int(value)}")
    parts = []
    for metric, by_method in scores.items():
        higher = higher_is_better.get(metric, False)
        methods = {m: v for m, v in by_method.items() if m != "random" and not math.isnan(v)}
        if not methods:
            continue
        best = (max if higher else min)(methods, key=methods.__getitem__)
        baseline = f" (random {_number(by_method['random'])})" if "random" in by_method else ""
        direction = "higher" if higher else "lower"
        parts.append(f"best {metric} ({direction} is better): {best} {_number(methods[best])}{baseline}")
    if degenerate:
        parts.append("degenerate maps: " + ", ".join(degenerate))
    return " · ".join(parts)


class LineProgress(Callback):
    """One line per training epoch and per validation, flushed at once: progress that survives being logged.

    ``lightning-xai fit`` adds it (and turns the progress bar off) when its output is not a terminal.

    Args:
        stream: where to write (default: ``sys.stdout`` at the time of writing).

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[LineProgress()], enable_progress_bar=False)  # doctest: +SKIP
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._epoch_started = self._validation_started = self._last_batch_ended = 0.0

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    @staticmethod
    def _epoch(trainer: Any) -> str:
        total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the epoch's clock."""
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """``epoch 1/2 · done in 75 s with its validation (63 steps so far) · train/loss 0.25``."""
        seconds = time.perf_counter() - self._epoch_started
        scalars = _scalars({k: v for k, v in trainer.callback_metrics.items() if not k.startswith("val")}, "xai/")
        steps = f"({trainer.global_step} steps so far)"
        line = f"{self._epoch(trainer)} · done in {seconds:.0f} s with its validation {steps}"
        self._print(line + (f" · {scalars}" if scalars else ""))

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the validation's clock."""
        self._validation_started = self._last_batch_ended = time.perf_counter()

    def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        """Where the batches end, the epoch-end work (explanations) starts."""
        self._last_batch_ended = time.perf_counter()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """A line for the validation and one per monitor that explained it."""
        if trainer.sanity_checking:
            return
        now = time.perf_counter()
        metrics = trainer.callback_metrics
        scalars = _scalars({k: v for k, v in metrics.items() if k.startswith("val")}, "xai/")
        self._print(
            f"{self._epoch(trainer)} · validated in {now - self._validation_started:.0f} s "
            f"(epoch-end work incl. explanations {now - self._last_batch_ended:.0f} s)"
            + (f" · {scalars}" if scalars else "")
        )
        for callback in trainer.callbacks:
            history = getattr(callback, "history", None)
            if not isinstance(history, Mapping) or trainer.current_epoch not in history:
                continue
            directions = {
                metric_name(metric): bool(getattr(metric, "higher_is_better", False))
                for metric in getattr(callback, "metrics", [])
            }
            prefix = getattr(getattr(callback, "keys", None), "prefix", "xai/")
            line = explanation_line(history[trainer.current_epoch], directions, prefix)
            if line:
                self._print(f"{self._epoch(trainer)} · explanations: {line}")

