"""What ``lightning-xai`` prints: the end-of-run summary, tables, the dashboard command."""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_xai.keys import LogKeys

__all__ = ["agreement_table", "fmt", "method_metric_table", "print_run_summary", "print_table", "tensorboard_command"]


def fmt(value: Any) -> str:
    """A value as printed in tables: floats with 4 decimals, ``nan`` as is.

    Example:
        >>> fmt(0.123456), fmt(float("nan")), fmt(3)
        ('0.1235', 'nan', '3')
    """
    if hasattr(value, "item"):  # tensors and numpy scalars
        value = value.item()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _histories(trainer: Any) -> list[tuple[str, Mapping[int, Mapping[str, Any]]]]:
    found = []
    for cb in trainer.callbacks:
        history = getattr(cb, "history", None)
        if isinstance(history, Mapping) and history:
            found.append((type(cb).__name__, history))
    return found


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table with rich, or as aligned plain text when rich is missing."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is optional: fall back to aligned plain text
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        print(title)
        for line in (header, *rows):
            print(
                "  ".join(
                    str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
                )
            )
        return
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)


def print_run_summary(trainer: Any, stage: str = "fit") -> None:
    """Print where the logs are, how to open them, and the explanation metrics of a finished run (rank zero only).

    Explanation metrics come from every callback with a non-empty ``history`` mapping (epoch ->
    ``{metric key: value}``, as kept by :class:`lightning_xai.ExplanationMonitor`): one row per key, one column
    per epoch. Without such a callback, the ``xai/`` entries of ``trainer.callback_metrics`` are printed instead.

    Args:
        trainer: The trainer after ``fit``/``validate``/``test``.
        stage: Name of the finished stage (used in the heading).
    """
    if not trainer.is_global_zero:
        return
    from lightning.pytorch.loggers import TensorBoardLogger

    print(f"\n[lightning-xai] {stage} finished.")
    loggers = [lg for lg in trainer.loggers if getattr(lg, "save_dir", None)]
    if loggers:
        print(f"  logs: {os.path.abspath(trainer.log_dir)}")
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                save_dir = shlex.quote(os.path.abspath(logger.save_dir))
                print(f"  dashboard: {tensorboard_command()} --logdir {save_dir}")
    else:
        print("  no logger wrote files (none configured, or fast_dev_run).")

    histories = _histories(trainer)
    for name, history in histories:
        keys: list[str] = []
        for metrics in history.values():
            keys.extend(k for k in metrics if k not in keys)
        # one row per metric, one column per epoch: keys are long and many, epochs are few
        epochs = sorted(history)
        rows = [[k] + [fmt(history[e][k]) if k in history[e] else "" for e in epochs] for k in keys]
        print_table(f"Explanation metrics ({name}.history)", ["metric", *[f"epoch {e}" for e in epochs]], rows)
    if histories:
        return
    xai = {k: v for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("xai/")}
    if xai:
        print_table(
            "Explanation metrics (last logged values)", ["metric", "value"], [[k, fmt(v)] for k, v in xai.items()]
        )
    else:
        print("  no explanation metrics were logged (add lightning_xai.ExplanationMonitor to trainer.callbacks).")


def tensorboard_command() -> str:
    """``tensorboard`` when it is on PATH, else the one installed beside this interpreter (e.g. ``.venv/bin``)."""
    import shutil

    if shutil.which("tensorboard"):
        return "tensorboard"
    beside = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    return shlex.quote(beside) if os.path.exists(beside) else "tensorboard"


def method_metric_table(scalars: Mapping[str, Any], prefix: str) -> tuple[list[str], list[list[str]]]:
    """Per-method scalars (scores, gains, stability, skipped and degenerate counts) as a method x metric table.

    Agreement between methods is not a method's value: see :func:`agreement_table`.

    Example:
        >>> method_metric_table({"xai/a/deletion_auc": 0.5, "xai/agreement/a_vs_b": 0.1}, "xai/")
        (['method', 'deletion_auc'], [['a', '0.5000']])
    """
    keys = LogKeys(prefix)
    methods: list[str] = []
    metrics: list[str] = []
    cells: dict[tuple[str, str], Any] = {}
    for key, value in scalars.items():
        parsed, chart = keys.parse(key), keys.chart(key)
        if parsed is None or chart is None or parsed.kind == "agreement":
            continue
        metric, method = chart
        methods += [method] if method not in methods else []
        metrics += [metric] if metric not in metrics else []
        cells[(method, metric)] = value
    rows = [[m] + [fmt(cells[(m, k)]) if (m, k) in cells else "" for k in metrics] for m in methods]
    return ["method", *metrics], rows


def agreement_table(scalars: Mapping[str, Any], prefix: str) -> tuple[list[str], list[list[str]]]:
    """The agreement (Spearman) between every pair of methods as a table ``(header, rows)``.

    Example:
        >>> agreement_table({"xai/agreement/a_vs_b": 0.25}, "xai/")
        (['methods', 'agreement'], [['a vs b', '0.2500']])
    """
    keys = LogKeys(prefix)
    rows = [
        [f"{parsed.method} vs {parsed.metric}", fmt(value)]
        for key, value in scalars.items()
        if (parsed := keys.parse(key)) is not None and parsed.kind == "agreement"
    ]
    return ["methods", "agreement"], rows
