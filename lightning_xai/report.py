"""A static, self-contained HTML report of a monitored run (``lightning-xai report RUN_DIR -o report.html``).

Reads the files sink's ``explanations.jsonl`` (and its PNG heatmaps) and writes ONE HTML file that needs no
network and no JavaScript: metric curves per method over epochs (inline SVG), the agreement matrix between
methods (Spearman rank correlation of their maps, averaged over probe samples, last epoch) and the evolution of
every probe sample's heatmaps across epochs (with a causal LM's per-completion-token matrices, when recorded). Every
string from the run is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_xai.explainers.random import Random
from lightning_xai.keys import AGREEMENT, COUNT_KINDS, GAIN_SUFFIX, JSONL_NAME, LogKeys, heatmap_path
from lightning_xai.metrics import rank_correlation
from lightning_xai.sinks.files import runs_in
from lightning_xai.viz import token_heatmap_html

#: The ``Random`` explainer's registered name: its line is the baseline every method is compared with.
RANDOM = Random.name
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def find_record(run_dir: str | os.PathLike[str]) -> Path:
    """The ``explanations.jsonl`` of ``run_dir`` (itself, or the newest one below it)."""
    root = Path(run_dir)
    if root.is_file() and root.name == JSONL_NAME:
        return root
    direct = root / JSONL_NAME
    if direct.exists():
        return direct
    found = sorted(root.rglob(JSONL_NAME), key=lambda p: p.stat().st_mtime) if root.exists() else []
    if not found:
        raise FileNotFoundError(
            f"No {JSONL_NAME} under {root}. Run training with ExplanationMonitor(write_files=True) (the default) "
            "and pass the run's log directory (e.g. runs/minilm_sentiment/version_0)."
        )
    return found[-1]


def load_epochs(path: Path) -> list[dict[str, Any]]:
    """Every epoch record, in file order (a resumed run may repeat an epoch: the last record wins).

    Raises:
        ValueError: the file holds the records of more than one run (they would be shown as one).
    """
    runs = runs_in(path)
    if len(runs) > 1:
        raise ValueError(
            f"{path} holds the records of {len(runs)} runs ({', '.join(str(r) for r in runs)}): a report shows one "
            "run. Report each run's own folder (every run now writes its own; this file was appended to by runs "
            "of an older version), or split the file by its 'run' field."
        )
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks for ties); NaN when either side is constant.

    The same :func:`~lightning_xai.metrics.rank_correlation` the monitor's agreement and stability use.

    Example:
        >>> import numpy as np
        >>> round(spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])), 6)
        1.0
    """
    first = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(1, -1))
    second = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(1, -1))
    return float(rank_correlation(first, second, torch.ones_like(first, dtype=torch.bool))[0])


def agreement_matrix(record: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Mean Spearman correlation between every pair of methods over the record's probe samples."""
    methods: list[str] = []
    for sample in record["samples"]:
        methods.extend(m for m in sample["maps"] if m not in methods)
    matrix = np.full((len(methods), len(methods)), np.nan)
    for i, a in enumerate(methods):
        for j, b in enumerate(methods):
            values = [
                spearman(np.ravel(s["maps"][a]), np.ravel(s["maps"][b]))
                for s in record["samples"]
                if a in s["maps"] and b in s["maps"]
            ]
            values = [v for v in values if not np.isnan(v)]
            matrix[i, j] = float(np.mean(values)) if values else np.nan
    return methods, matrix


#: What each known metric's value can be (its natural range); a change is drawn against this scale, so a move
#: from 0.145 to 0.147 of a probability area stays small instead of filling the chart.
_NATURAL_RANGES: list[tuple[str, tuple[float, float]]] = [
    ("deletion_auc", (0.0, 1.0)),
    ("insertion_auc", (0.0, 1.0)),
    ("auac", (0.0, 1.0)),
    ("aupc", (0.0, 1.0)),
    ("au_mse", (0.0, 1.0)),
    ("plausibility", (0.0, 1.0)),
    ("aopc_", (-1.0, 1.0)),
    ("taucorr_loo", (-1.0, 1.0)),
    ("area_between_curves", (-1.0, 1.0)),
    ("road", (0.0, 1.0)),
    ("stability", (-1.0, 1.0)),
    ("agreement", (-1.0, 1.0)),
]
#: A gain over random is relative (1 = 100 % better than chance): its changes are read against 1.
_GAIN_SCALE = 1.0
#: The smallest y span of a chart: 5 % of a metric's natural range, else 10 % of its scale or magnitude (+-5 %).
_MIN_SPAN_OF_RANGE = 0.05
_MIN_SPAN_OF_SCALE = 0.1


def natural_range(metric: str) -> tuple[float, float] | None:
    """The values a metric can take, when known (by its log name), else None.

    Example:
        >>> natural_range("deletion_auc"), natural_range("aopc_sufficiency"), natural_range("log_odds")
        ((0.0, 1.0), (-1.0, 1.0), None)
        >>> natural_range("human_plausibility")
        (0.0, 1.0)
    """
    for name, bounds in _NATURAL_RANGES:
        if metric == name or (name.endswith("_") and metric.startswith(name)) or metric.endswith("_" + name):
            return bounds
    return None


def nice_step(span: float, target: int = 6) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving at most about ``target`` ticks over ``span``.

    Example:
        >>> nice_step(0.1), nice_step(1.0), nice_step(7.0), nice_step(0.013)
        (0.02, 0.2, 2.0, 0.005)
    """
    raw = span / max(1, target - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for mantissa in (1.0, 2.0, 5.0, 10.0):
        if mantissa * power >= raw * (1 - 1e-9):
            return mantissa * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def axis_range(
    values: list[float], natural: tuple[float, float] | None = None, scale: float | None = None,
    integer: bool = False,
) -> tuple[float, float, list[float]]:
    """A y-axis ``(low, high, ticks)`` for ``values`` that spans at least a sensible minimum, on nice ticks.

    The span is at least 5 % of the metric's natural range when known (``[0, 1]`` for probability areas:
    0.145 -> 0.147 is drawn as a small change), else 10 % of ``scale``, else of the values' magnitude (at least
    +-5 % of it). The axis stays inside the natural range when the values do, and ends on multiples of a nice
    step (1, 2 or 5 times a power of ten; whole numbers for counts).

    Args:
        values: every value drawn on the chart (lines and reference lines).
        natural: what the metric can be, e.g. ``(0, 1)``.
        scale: the size of a meaningful change when there is no natural range (e.g. 1 for relative gains).
        integer: counts: whole-number ticks, from zero.

    Returns:
        The axis' low and high ends and its ticks, low to high.

    Example:
        >>> low, high, ticks = axis_range([0.145, 0.147], natural=(0.0, 1.0))
        >>> low, high, [round(t, 3) for t in ticks]
        (0.1, 0.18, [0.1, 0.12, 0.14, 0.16, 0.18])
        >>> axis_range([200.0, 201.0])[:2]
        (185.0, 215.0)
        >>> axis_range([8.0], natural=(0.0, math.inf), integer=True)
        (0.0, 10.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    """
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    low, high = min(finite), max(finite)
    if integer:
        low = min(low, 0.0)  # counts are read from zero
    bounded = natural is not None and all(math.isfinite(b) for b in natural)
    if bounded:
        floor = _MIN_SPAN_OF_RANGE * (natural[1] - natural[0])  # type: ignore[index]
    else:
        floor = _MIN_SPAN_OF_SCALE * (scale if scale is not None else max(abs(low), abs(high)) or 1.0)
    floor = max(floor, 2.0 if integer else 0.0, 1e-12)
    if high - low < floor:
        centre = (low + high) / 2
        low, high = centre - floor / 2, centre + floor / 2
    margin = 0.05 * (high - low)  # markers at the extremes stay inside the plot
    low, high = low - margin, high + margin
    if natural is not None:
        inside = natural[0] <= min(finite) and max(finite) <= natural[1]
        if inside and low < natural[0]:
            low, high = natural[0], min(natural[1], high + natural[0] - low)
        if inside and high > natural[1]:
            low, high = max(natural[0], low - (high - natural[1])), natural[1]
    step = nice_step(high - low)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def tick_label(value: float, step: float) -> str:
    """A tick value with the decimals its step needs (``0.150``-like, never ``1.21e-05``-like for common spans).

    Example:
        >>> tick_label(0.15, 0.05), tick_label(-0.0, 0.5), tick_label(0.004, 0.002), tick_label(12000.0, 2000.0)
        ('0.15', '0', '0.004', '12000')
    """
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if decimals > 6 or abs(value) >= 1e7:
        return f"{value:.3g}"
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _breakable(text: str) -> str:
    """Escaped ``text`` that may wrap after underscores (metric names have no spaces to wrap at)."""
    return "_<wbr>".join(html.escape(part) for part in text.split("_"))


_MARKERS = ("circle", "square", "triangle", "diamond")
_BASELINE_COLOUR = "#6b6b6b"
_BASELINE_DASH = "7,4"


def _marker(shape: str, x: float, y: float, colour: str, tip: str) -> str:
    tip = f"<title>{html.escape(tip)}</title>"
    if shape == "square":
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{colour}">{tip}</rect>'
    if shape == "triangle":
        return f'<polygon points="{x:.1f},{y - 4:.1f} {x - 4:.1f},{y + 3:.1f} {x + 4:.1f},{y + 3:.1f}" ' \
               f'fill="{colour}">{tip}</polygon>'
    if shape == "diamond":
        return f'<polygon points="{x:.1f},{y - 4:.1f} {x + 4:.1f},{y:.1f} {x:.1f},{y + 4:.1f} {x - 4:.1f},{y:.1f}" ' \
               f'fill="{colour}">{tip}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">{tip}</circle>'


def _swatch(colour: str, dash: str = "", shape: str | None = None) -> str:
    """A legend swatch: a short line in the series' colour and dash, with its marker."""
    mark = _marker(shape, 14, 6, colour, "").replace("<title></title>", "") if shape else ""
    return (f'<svg width="28" height="12" aria-hidden="true"><line x1="1" y1="6" x2="27" y2="6" stroke="{colour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>{mark}</svg>')


def _chart(
    title: str,
    series: dict[str, list[tuple[int, float]]],
    note: str,
    *,
    natural: tuple[float, float] | None = None,
    scale: float | None = None,
    integer: bool = False,
    baseline: str | None = None,
    reference: tuple[str, float] | None = None,
    styles: dict[str, tuple[str, str]] | None = None,
) -> str:
    """One chart: an HTML title and note (they wrap, never overlap), the SVG plot, an HTML legend.

    Args:
        title: chart title (wraps after underscores).
        series: line name -> ``(epoch, value)`` points.
        note: ``"higher is better"``-like line under the title.
        natural: what the metric can be (see :func:`axis_range`).
        scale: a meaningful change's size when there is no natural range (see :func:`axis_range`).
        integer: counts: whole-number ticks.
        baseline: the line drawn as the dashed grey baseline (the ``Random`` explainer's), when present.
        reference: ``(label, value)`` of a dashed horizontal reference line (0 for a gain over random).
        styles: line name -> ``(colour, marker)``, so a method looks the same on every chart.
    """
    width, height, left, right, top, bottom = 440, 200, 50, 12, 10, 34
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    xs = sorted({p[0] for p in points})
    x0, x1 = (xs[0], xs[-1]) if len(xs) > 1 else (xs[0] - 1, xs[0] + 1)
    drawn = [p[1] for p in points] + ([reference[1]] if reference else [])
    y0, y1, ticks = axis_range(drawn, natural, scale, integer)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0

    inset = 10  # the first and last epochs' markers clear the axes

    def sx(x: float) -> float:
        return left + inset + (x - x0) / (x1 - x0) * (width - left - right - 2 * inset)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
    ]
    for tick in ticks:
        y = sy(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end">'
                     f"{tick_label(tick, step)}</text>")
    parts += [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>',
    ]
    every = max(1, math.ceil(len(xs) / 12))  # at most about a dozen epoch labels
    for epoch in xs[::every]:
        parts.append(
            f'<text x="{sx(epoch):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{epoch}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">epoch</text>'
    )
    legend: list[str] = []
    baseline_parts: list[str] = []
    if reference is not None:
        label, value = reference
        parts.append(f'<line x1="{left}" y1="{sy(value):.1f}" x2="{width - right}" y2="{sy(value):.1f}" '
                     f'stroke="{_BASELINE_COLOUR}" stroke-width="1.5" stroke-dasharray="{_BASELINE_DASH}">'
                     f"<title>{html.escape(label)}</title></line>")
        legend.append(f"{_swatch(_BASELINE_COLOUR, _BASELINE_DASH)}{html.escape(label)}")
    for k, (name, values) in enumerate(series.items()):
        values = sorted(values)
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        if name == baseline:  # the chance level every method is compared with: drawn last, so always visible
            baseline_parts = [f'<polyline fill="none" stroke="{_BASELINE_COLOUR}" stroke-width="1.5" '
                              f'stroke-dasharray="{_BASELINE_DASH}" points="{coords}"/>']
            baseline_parts += [_marker("circle", sx(x), sy(y), _BASELINE_COLOUR, f"{name} epoch {x}: {y:.4g}")
                               .replace('r="3"', 'r="2"') for x, y in values]
            legend.insert(0, f"{_swatch(_BASELINE_COLOUR, _BASELINE_DASH)}{html.escape(name)} (baseline)")
            continue
        # curves on top of each other stay distinguishable by their markers
        colour, shape = (styles or {}).get(name) or (_PALETTE[k % len(_PALETTE)], _MARKERS[k % len(_MARKERS)])
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        parts += [_marker(shape, sx(x), sy(y), colour, f"{name} epoch {x}: {y:.4g}") for x, y in values]
        legend.append(f"{_swatch(colour, '', shape)}{html.escape(name)}")
    parts += [*baseline_parts, "</svg>"]
    items = "".join(f'<span class="item">{entry}</span>' for entry in legend)
    return (
        f'<figure class="chart"><figcaption><div class="title">{_breakable(title)}</div>'
        f'<div class="note">{html.escape(note)}</div></figcaption>{"".join(parts)}'
        f'<div class="legend">{items}</div></figure>'
    )


def _agreement_table(methods: list[str], matrix: np.ndarray) -> str:
    if not methods:
        return "<p><em>No maps recorded.</em></p>"
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    rows = []
    for i, method in enumerate(methods):
        cells = []
        for j in range(len(methods)):
            value = matrix[i, j]
            if np.isnan(value):
                cells.append('<td style="background:#eee">n/a</td>')
                continue
            alpha = min(1.0, abs(value))
            colour = f"rgba(214,39,40,{alpha:.2f})" if value >= 0 else f"rgba(31,119,180,{alpha:.2f})"
            cells.append(f'<td style="background:{colour}">{value:.2f}</td>')
        rows.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    return f'<table class="agree"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _image_cell(png: Path, alt: str, style: str = "") -> str:
    """An ``<img>`` of the PNG inlined, or a note naming ``alt`` when the file is missing."""
    uri = _image_uri(png)
    if uri is None:
        return f"<em>{html.escape(alt)}: no image file</em>"
    return f'<img alt="{html.escape(alt)}" src="{uri}"{style}>'


def _image_uri(path: Path) -> str | None:
    if not path.exists():
        return None
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _evolution(records: list[dict[str, Any]], root: Path) -> str:
    indices = sorted({s["index"] for r in records for s in r["samples"]})
    sections = []
    for index in indices:
        rows = []
        for record in records:
            sample = next((s for s in record["samples"] if s["index"] == index), None)
            if sample is None:
                continue
            caption = " · ".join(
                part
                for part in (
                    None if sample.get("label") is None else f"label: {sample['label']}",
                    None if sample.get("prediction") is None else f"pred: {sample['prediction']}",
                    f"explained: {sample.get('explained')}",
                )
                if part
            )
            cells = []
            for method, values in sample["maps"].items():
                if sample.get("tokens") is not None:
                    cells.append(
                        token_heatmap_html(sample["tokens"], np.asarray(values, dtype=float), title=method,
                                           signed=sample.get("signed", {}).get(method, False))
                    )
                else:
                    png = heatmap_path(root, int(record["epoch"]), method, index)
                    cells.append(_image_cell(png, method, ' style="max-width:300px"'))
            for method in (sample.get("completion_tokens") or {}).get("maps", {}):  # causal LMs: per-token matrices
                png = heatmap_path(root, int(record["epoch"]), method, index, view="completion_tokens")
                cells.append(_image_cell(png, f"{method} per completion token"))
            rows.append(
                f'<div class="epoch"><div class="tag">epoch {int(record["epoch"])} — {html.escape(caption)}</div>'
                + "".join(f'<div class="cell">{c}</div>' for c in cells)
                + "</div>"
            )
        sections.append(f"<details open><summary>probe sample {index}</summary>{''.join(rows)}</details>")
    return "".join(sections) or "<p><em>No probe samples recorded.</em></p>"


def _metric_charts(records: list[dict[str, Any]], keys: LogKeys) -> tuple[str, str]:
    """The charts of every logged scalar: ``(metric charts, agreement charts)`` as HTML.

    Metric charts come in a reading order: each metric, then its gain over random, then stability and the
    skipped/degenerate counts; agreement pairs follow on their own. The ``Random`` explainer's line is a dashed
    grey baseline, and a gain chart has a dashed line at 0 (as good as random).
    """
    directions: dict[str, bool] = {}
    kinds: dict[str, str] = {}
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        for key, value in record["scalars"].items():
            chart, line = keys.chart(key) or (key, key)
            parsed = keys.parse(key)
            kinds.setdefault(chart, parsed.kind if parsed else "other")
            if key in record.get("higher_is_better", {}):
                directions[chart] = bool(record["higher_is_better"][key])
            series.setdefault(chart, {}).setdefault(line, []).append((int(record["epoch"]), float(value)))
    lines = [line for chart in series if kinds[chart] != "agreement" for line in series[chart]]
    methods = [m for m in dict.fromkeys(lines) if m != RANDOM]
    styles = {m: (_PALETTE[i % len(_PALETTE)], _MARKERS[i % len(_MARKERS)]) for i, m in enumerate(methods)}
    random_run = any(RANDOM in by_line for by_line in series.values())
    order = {"score": 0, "gain": 0, "stability": 1, **dict.fromkeys(COUNT_KINDS, 3), "skipped": 2, "other": 4,
             "agreement": 5}

    def position(chart: str) -> tuple[int, str, int]:
        kind = kinds[chart]
        metric = chart[: -len(GAIN_SUFFIX)] if kind == "gain" else chart
        return order[kind], metric, kind == "gain"

    metric_charts, agreement_charts = [], []
    for chart in sorted(series, key=position):
        kind, higher = kinds[chart], directions.get(chart)
        note = "" if higher is None else ("higher is better" if higher else "lower is better")
        options: dict[str, Any] = {"styles": styles, "baseline": RANDOM}
        if kind == "gain":
            options["scale"] = _GAIN_SCALE
            if random_run:
                options["reference"] = ("random (gain 0)", 0.0)
            note += "; > 0: better than random" if note else "> 0: better than random"
        elif kind in COUNT_KINDS:
            options.update(natural=(0.0, math.inf), integer=True)
        else:
            options["natural"] = natural_range(AGREEMENT if kind == "agreement" else chart)
        if kind == "agreement":
            first, _, second = chart.partition("_vs_")
            agreement_charts.append(_chart(f"{first} vs {second}", series[chart], "Spearman of the two maps",
                                           **options))
        else:
            metric_charts.append(_chart(chart, series[chart], note, **options))
    return "".join(metric_charts), "".join(agreement_charts)


def build_report(run_dir: str | os.PathLike[str]) -> str:
    """The report of ``run_dir`` as one HTML string.

    Args:
        run_dir: a run's log directory, its ``xai`` folder, or an ``explanations.jsonl`` file.
    """
    path = find_record(run_dir)
    records = load_epochs(path)
    if not records:
        raise ValueError(f"{path} holds no epoch record yet")
    keys = LogKeys(records[-1].get("prefix", "xai/"))
    charts, agreement_charts = _metric_charts(records, keys)
    methods, matrix = agreement_matrix(records[-1])
    title = f"Explanation report — {path.parent}"
    style = (
        "body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222}h1{font-size:20px}"
        "h2{font-size:16px;margin-top:28px}"
        ".agree td,.agree th{padding:4px 10px;border:1px solid #ccc;text-align:center}"
        ".agree{border-collapse:collapse}.epoch{margin:8px 0;padding:6px;border-left:3px solid #ccc}"
        ".tag{color:#555;font-size:12px;margin-bottom:4px}.cell{margin:4px 0}summary{font-weight:bold;cursor:pointer}"
        ".charts{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}"
        ".chart{width:440px;margin:0;padding:8px 8px 6px;border:1px solid #ddd;background:#fff;box-sizing:content-box}"
        ".chart svg{display:block}.chart .title{font-weight:bold;font-size:13px;overflow-wrap:anywhere}"
        ".chart .note{color:#555;font-size:11px;margin:2px 0 4px}"
        ".legend{font-size:11px;display:flex;flex-wrap:wrap;gap:2px 12px;margin-top:4px}"
        ".legend .item{display:inline-flex;align-items:center;gap:4px;overflow-wrap:anywhere}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(records)} epoch(s): {', '.join(str(int(r['epoch'])) for r in records)}; methods: "
        f"{html.escape(', '.join(methods) or 'none')}.</p>"
        f"<h2>Metrics over epochs</h2><div class=\"charts\">{charts or '<em>No metric logged.</em>'}</div>"
        f"<h2>Agreement between methods (Spearman, last epoch, mean over probe samples)</h2>"
        f"{_agreement_table(methods, matrix)}"
        + (f'<h3>Agreement over epochs</h3><div class="charts">{agreement_charts}</div>' if agreement_charts else "")
        + f"<h2>Heatmap evolution of the probe samples</h2>{_evolution(records, path.parent)}"
        "</body></html>"
    )


def write_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write :func:`build_report` to ``output`` and return its path."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(run_dir), encoding="utf-8")
    return out
