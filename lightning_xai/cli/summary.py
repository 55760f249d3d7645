"""What ``lightning-xai`` prints: the end-of-run summary, tables, the dashboard command.

Tables fit the terminal (80 columns is enough): one row per method, one short-named column per metric (``del↓``:
deletion AUC, lower is better) explained by a legend line, gains over ``Random`` in a table of their own, and the
agreement between methods as pairs (never as if ``agreement`` were a method). Columns that do not fit side by side
go to a second table rather than being cut.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_xai.keys import HEALTH_COUNTS, STABILITY, LogKeys

__all__ = [
    "Column",
    "agreement_table",
    "count_lines",
    "fmt",
    "installed_command",
    "method_metric_table",
    "print_explanation_tables",
    "print_run_summary",
    "print_table",
    "short_name",
    "tensorboard_command",
]

#: The ``Random`` explainer's registered name: its row is the baseline, its gains are zero by definition.
RANDOM = "random"
#: Short column names of the package's metrics and diagnostics (a legend line spells them out).
SHORT_NAMES = {
    "deletion_auc": "del",
    "insertion_auc": "ins",
    "aopc_comprehensiveness": "comp",
    "aopc_sufficiency": "suff",
    "area_between_curves": "abc",
    "auac": "auac",
    "aupc": "aupc",
    "au_mse": "aumse",
    "log_odds": "lodds",
    "taucorr_loo": "loo",
    "road": "road",
    STABILITY: "stab",
}
#: What a diagnostic column is, for the legend (they have no "better" direction).
_DIAGNOSTICS = {STABILITY: "Spearman with the previous validation's maps"}
#: The per-method counts, listed under the table (only the non-zero ones) rather than as mostly-empty columns.
_COUNTS = {suffix: f"{suffix} ({what})" for suffix, (_, what) in HEALTH_COUNTS.items()}


def fmt(value: Any) -> str:
    """A value as printed in tables: floats with 4 decimals, ``nan`` as is.

    Example:
        >>> fmt(0.123456), fmt(float("nan")), fmt(3), fmt(-1e-7)
        ('0.1235', 'nan', '3', '0.0000')
    """
    if hasattr(value, "item"):  # tensors and numpy scalars
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        text = f"{value:.4f}"
        return text[1:] if text == "-0.0000" else text  # a tiny negative is not shown as a signed zero
    return str(value)


def short_name(metric: str) -> str:
    """A short plain-ASCII column name of a metric (at most 6 characters).

    Example:
        >>> short_name("deletion_auc"), short_name("token_f1_plausibility"), short_name("my_new_metric")
        ('del', 'plaus', 'mnm')
    """
    if metric in SHORT_NAMES:
        return SHORT_NAMES[metric]
    if metric.endswith("plausibility"):
        return "plaus"
    parts = [p for p in metric.split("_") if p]
    if len(metric) <= 6:
        return metric
    return "".join(p[0] for p in parts)[:6] if len(parts) > 1 else metric[:5]


def _arrows() -> tuple[str, str]:
    """``(higher, lower)`` direction marks: arrows where the output can encode them, else ``+``/``-``."""
    try:
        "↑↓".encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "+", "-"
    return "↑", "↓"


@dataclass(frozen=True)
class Column:
    """One metric column of a method x metric table.

    Attributes:
        metric: the metric's log name (``deletion_auc``), or ``stability``/``skipped_samples``/``degenerate_samples``.
        header: the short header (``del↓``).
        higher_is_better: the metric's direction; None for diagnostics.
    """

    metric: str
    header: str
    higher_is_better: bool | None

    def legend(self) -> str:
        """``del↓ deletion_auc (lower is better)``-like."""
        if self.metric in _DIAGNOSTICS:
            return f"{self.header} {self.metric} ({_DIAGNOSTICS[self.metric]})"
        if self.higher_is_better is None:
            return f"{self.header} {self.metric}"
        return f"{self.header} {self.metric} ({'higher' if self.higher_is_better else 'lower'} is better)"


def _direction(metric: str, directions: Mapping[str, bool]) -> bool | None:
    """A metric's direction: as the run reported it, else its registered default, else unknown."""
    if metric in directions:
        return bool(directions[metric])
    try:
        from lightning_xai.metrics import get_metric

        return bool(get_metric(metric).higher_is_better)
    except Exception:  # not a registered name (a custom metric): no arrow
        return None


def method_metric_table(
    scalars: Mapping[str, Any],
    prefix: str,
    directions: Mapping[str, bool] | None = None,
    kind: str = "score",
) -> tuple[list[str], list[list[str]], list[Column]]:
    """Per-method values as a method x metric table with short headers: ``(header, rows, columns)``.

    Args:
        scalars: logged key -> value.
        prefix: the keys' prefix (``"xai/"``).
        directions: metric -> higher is better (default: each metric's registered direction).
        kind: ``"score"``: every method's scores (``random`` last, as the baseline), then stability and, when any
            (the skipped/degenerate counts are not columns: see :func:`count_lines`); ``"gain"``: the gains over
            random (no ``random`` row).

    Agreement between methods is not a method's value: see :func:`agreement_table`.

    Example:
        >>> header, rows, columns = method_metric_table(
        ...     {"xai/a/deletion_auc": 0.5, "xai/random/deletion_auc": 0.6, "xai/agreement/a_vs_random": 0.1}, "xai/")
        >>> header[0], [c.metric for c in columns], rows
        ('method', ['deletion_auc'], [['a', '0.5000'], ['random (baseline)', '0.6000']])
    """
    keys = LogKeys(prefix)
    higher, lower = _arrows()
    methods: list[str] = []
    metrics: list[str] = []
    cells: dict[tuple[str, str], Any] = {}
    for key, value in scalars.items():
        parsed = keys.parse(key)
        if parsed is None or parsed.kind == "agreement" or (parsed.kind == "gain") != (kind == "gain"):
            continue
        methods += [parsed.method] if parsed.method not in methods else []
        metrics += [parsed.metric] if parsed.metric not in metrics else []
        cells[(parsed.method, parsed.metric)] = value
    ordered = [m for m in metrics if m not in (STABILITY, *_COUNTS)]
    ordered += [m for m in (STABILITY,) if m in metrics]
    methods = [m for m in methods if m != RANDOM] + [m for m in methods if m == RANDOM]
    columns, used = [], set()
    for metric in ordered:
        name = short_name(metric)
        for n in range(2, 100):  # two metrics of one abbreviation get numbered
            if name not in used:
                break
            name = f"{short_name(metric)[:5]}{n}"
        used.add(name)
        direction = None if metric in _DIAGNOSTICS else (True if kind == "gain" else
                                                        _direction(metric, directions or {}))
        mark = "" if direction is None or kind == "gain" else (higher if direction else lower)
        columns.append(Column(metric, name + mark, direction))
    rows = [
        [f"{m} (baseline)" if m == RANDOM else m]
        + [fmt(cells[(m, c.metric)]) if (m, c.metric) in cells else "" for c in columns]
        for m in methods
    ]
    return ["method", *[c.header for c in columns]], rows, columns


def agreement_table(scalars: Mapping[str, Any], prefix: str) -> tuple[list[str], list[list[str]]]:
    """The agreement (Spearman) between every pair of methods as a table ``(header, rows)``: pairs as rows.

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


def count_lines(scalars: Mapping[str, Any], prefix: str) -> list[str]:
    """One line per health count (keys.HEALTH_COUNTS: degenerate, skipped, ...) naming the methods where it is not 0.

    Example:
        >>> count_lines({"xai/a/degenerate_samples": 3.0, "xai/b/degenerate_samples": 0.0,
        ...              "xai/a/skipped_samples": 0.0}, "xai/")
        ['degenerate_samples (all-zero or one-hot maps, not scored): a 3']
    """
    keys = LogKeys(prefix)
    found: dict[str, list[str]] = {}
    for key, value in scalars.items():
        parsed = keys.parse(key)
        count = 0 if parsed is None or parsed.metric not in _COUNTS else int(round(float(value)))
        if count:
            found.setdefault(parsed.metric, []).append(f"{parsed.method} {count}")  # type: ignore[union-attr]
    return [f"{_COUNTS[kind]}: {', '.join(found[kind])}" for kind in _COUNTS if kind in found]


def _width() -> int:
    """The output's width in columns: rich's idea of the console when rich is there, else the terminal's."""
    try:
        from rich.console import Console
    except ImportError:
        return shutil.get_terminal_size((80, 24)).columns
    return Console().width


def _fits(header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> bool:
    """Whether a table with these cells fits ``width`` columns (rich's box: 3 per column plus 1)."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return sum(widths) + 3 * len(widths) + 1 <= width


def _split(header: list[str], rows: list[list[str]], width: int) -> list[tuple[list[str], list[list[str]]]]:
    """The table as consecutive column groups (each with the first column) that fit ``width`` each."""
    groups: list[list[int]] = [[]]
    for index in range(1, len(header)):
        trial = [0, *groups[-1], index]
        if groups[-1] and not _fits([header[i] for i in trial], [[r[i] for i in trial] for r in rows], width):
            groups.append([])
        groups[-1].append(index)
    return [([header[0], *(header[i] for i in g)], [[r[0], *(r[i] for i in g)] for r in rows]) for g in groups if g]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table with rich, or as aligned plain text when rich is missing.

    Headers are never cut: the first column (names) folds when the table is too wide, the others keep their width.
    """
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
    # the title is a line of its own: rich would wrap it to the table's width
    print(textwrap.fill(title, width=max(40, _width()), break_on_hyphens=False))
    table = Table()
    for i, name in enumerate(header):
        if i == 0:
            table.add_column(name, justify="left", overflow="fold")
        else:
            table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)


def _legend(columns: Sequence[Column], width: int) -> None:
    """One wrapped legend line: every short header with its metric's full name and direction."""
    print(textwrap.fill("  " + " · ".join(c.legend() for c in columns), width=width, subsequent_indent="  ",
                        break_on_hyphens=False))


def print_explanation_tables(
    scalars: Mapping[str, Any],
    prefix: str = "xai/",
    title: str = "Explanation metrics (method x metric)",
    directions: Mapping[str, bool] | None = None,
) -> None:
    """Print a run's explanation metrics as tables that fit the terminal.

    A method x metric table (short headers, ``random`` last as the baseline) with a legend line, the gains over
    random in their own table, and the agreement between methods with pairs as rows.

    Args:
        scalars: logged key -> value (one validation's).
        prefix: the keys' prefix.
        title: the heading of the method x metric table.
        directions: metric -> higher is better (default: each metric's registered direction).

    Example:
        >>> import os
        >>> os.environ.setdefault("COLUMNS", "80")  # doctest: +ELLIPSIS
        '...'
        >>> print_explanation_tables({"xai/grad_sam/deletion_auc": 0.25, "xai/random/deletion_auc": 0.5,
        ...                           "xai/grad_sam/deletion_auc_gain_vs_random": 0.5,
        ...                           "xai/agreement/grad_sam_vs_random": 0.125})  # doctest: +ELLIPSIS
        Explanation metrics (method x metric)
        ...grad_sam ...0.2500...
        ...random (baseline) ...0.5000...
          del... deletion_auc (lower is better)
        Gain over random (> 0: better than random)
        ...
        Agreement between methods (Spearman of their maps)
        ...grad_sam vs random ...0.1250...
    """
    width = max(40, _width())
    headings = {"score": title, "gain": "Gain over random (> 0: better than random)"}
    for kind, heading in headings.items():
        header, rows, columns = method_metric_table(scalars, prefix, directions, kind=kind)
        if not rows:
            continue
        parts = _split(header, rows, width)
        for n, (part_header, part_rows) in enumerate(parts):
            more = f" ({n + 1}/{len(parts)})" if len(parts) > 1 else ""
            print_table(heading + more, part_header, part_rows)
        if kind == "score":
            _legend(columns, width)
            for line in count_lines(scalars, prefix):
                print(textwrap.fill("  " + line, width=width, subsequent_indent="    ", break_on_hyphens=False))
    header, rows = agreement_table(scalars, prefix)
    if rows:
        print_table("Agreement between methods (Spearman of their maps)", header, rows)


def _histories(trainer: Any) -> list[tuple[str, Mapping[int, Mapping[str, Any]], Any]]:
    found = []
    for cb in trainer.callbacks:
        history = getattr(cb, "history", None)
        if isinstance(history, Mapping) and history:
            found.append((type(cb).__name__, history, cb))
    return found


def print_run_summary(trainer: Any, stage: str = "fit") -> None:
    """Print where the logs are, how to open them, and the explanation metrics of a finished run (rank zero only).

    Explanation metrics come from every callback with a non-empty ``history`` mapping (epoch ->
    ``{metric key: value}``, as kept by :class:`lightning_xai.ExplanationMonitor`): each key's latest value, as
    the tables of :func:`print_explanation_tables` (curves over epochs: the dashboard or ``lightning-xai report``).
    Without such a callback, the ``xai/`` entries of ``trainer.callback_metrics`` are printed instead.

    Args:
        trainer: The trainer after ``fit``/``validate``/``test``.
        stage: Name of the finished stage (used in the heading).
    """
    if not trainer.is_global_zero:
        return
    from lightning.pytorch.loggers import TensorBoardLogger

    print(f"\n[lightning-xai] {stage} finished.")
    loggers = [lg for lg in trainer.loggers if getattr(lg, "save_dir", None)]
    histories = _histories(trainer)
    if loggers:
        print(f"  logs: {os.path.abspath(trainer.log_dir)}")
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                save_dir = shlex.quote(os.path.abspath(logger.save_dir))
                print(f"  dashboard: {tensorboard_command()} --logdir {save_dir}")
    else:
        print("  no logger wrote files (none configured, or fast_dev_run).")

    for name, history, callback in histories:
        latest: dict[str, Any] = {}
        for epoch in sorted(history):  # each key's latest value (stability starts at the second validation)
            latest.update(history[epoch])
        epochs = sorted(history)
        when = f"epoch {epochs[-1]}" + (f" (the last of {len(epochs)} validations)" if len(epochs) > 1 else "")
        source = f" of {name}" if len(histories) > 1 else ""  # several monitors: say whose
        print_explanation_tables(latest, getattr(callback, "log_prefix", "xai/"),
                                 title=f"Explanation metrics{source} at {when}", directions=_directions(callback))
    if histories:
        return
    xai = {k: v for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("xai/")}
    if xai:
        print_explanation_tables(xai, "xai/", title="Explanation metrics (last logged values)")
    else:
        print("  no explanation metrics were logged (add lightning_xai.ExplanationMonitor to trainer.callbacks).")


def _directions(callback: Any) -> dict[str, bool]:
    """Metric name -> higher is better, from a monitor's own metric objects (a LeRF deletion is higher-better)."""
    from lightning_xai.scoring import metric_name

    return {metric_name(m): bool(m.higher_is_better) for m in getattr(callback, "metrics", None) or []
            if hasattr(m, "higher_is_better")}


def installed_command(name: str) -> str:
    """``name`` when it is on PATH, else the console script installed beside this interpreter (e.g. ``.venv/bin``).

    Example:
        >>> installed_command("a-program-nobody-installed")
        'a-program-nobody-installed'
    """
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), name)
    return name if shutil.which(name) or not os.path.exists(beside) else shlex.quote(beside)


def tensorboard_command() -> str:
    """``tensorboard`` when it is on PATH, else the one installed beside this interpreter (e.g. ``.venv/bin``)."""
    return installed_command("tensorboard")
