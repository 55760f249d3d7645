"""A static, self-contained HTML report of a monitored run (``lightning-xai report RUN_DIR -o report.html``).

Reads the files sink's ``explanations.jsonl`` (and its PNG heatmaps) and writes ONE HTML file that needs no
network and no JavaScript: metric curves per method over epochs (inline SVG), the agreement matrix between
methods (Spearman rank correlation of their maps, averaged over probe samples, last epoch) and the evolution of
every probe sample's heatmaps across epochs. Every string from the run is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_xai.keys import JSONL_NAME, LogKeys, heatmap_path
from lightning_xai.metrics import rank_correlation
from lightning_xai.sinks.files import runs_in
from lightning_xai.viz import token_heatmap_html

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


def _svg_chart(title: str, series: dict[str, list[tuple[int, float]]], note: str) -> str:
    width, height, left, right, top, bottom = 460, 240, 52, 130, 28, 34
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.08
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" style="background:#fff;border:1px solid #ddd;margin:4px">',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="{width - right + 8}" y="18" font-size="11" fill="#555">{html.escape(note)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>',
    ]
    for tick in np.linspace(y0 + pad, y1 - pad, 3):
        parts.append(f'<text x="{left - 4}" y="{sy(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.3g}</text>')
    for epoch in sorted(set(xs)):
        parts.append(
            f'<text x="{sx(epoch):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{epoch}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">epoch</text>'
    )
    for k, (name, values) in enumerate(series.items()):
        colour = _PALETTE[k % len(_PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        dash = ["", "6,3", "2,3", "8,3,2,3"][k % 4]  # overlapping curves stay distinguishable
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" '
                     f'points="{coords}"/>')
        for x, y in values:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"><title>'
                         f"{html.escape(name)} epoch {x}: {y:.4g}</title></circle>")
        ly = top + 14 + 16 * k
        parts.append(f'<rect x="{width - right + 8}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{width - right + 22}" y="{ly}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


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
                    uri = _image_uri(png)
                    cells.append(
                        f'<img alt="{html.escape(method)}" src="{uri}" style="max-width:300px">' if uri
                        else f"<em>{html.escape(method)}: no image file</em>"
                    )
            rows.append(
                f'<div class="epoch"><div class="tag">epoch {int(record["epoch"])} — {html.escape(caption)}</div>'
                + "".join(f'<div class="cell">{c}</div>' for c in cells)
                + "</div>"
            )
        sections.append(f"<details open><summary>probe sample {index}</summary>{''.join(rows)}</details>")
    return "".join(sections) or "<p><em>No probe samples recorded.</em></p>"


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
    directions: dict[str, bool] = {}
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        for key, value in record["scalars"].items():
            chart, line = keys.chart(key) or (key, key)
            if key in record.get("higher_is_better", {}):
                directions[chart] = bool(record["higher_is_better"][key])
            series.setdefault(chart, {}).setdefault(line, []).append((int(record["epoch"]), float(value)))
    charts = []
    for metric, by_method in sorted(series.items()):
        higher = directions.get(metric)
        note = "" if higher is None else ("higher is better" if higher else "lower is better")
        charts.append(_svg_chart(metric, by_method, note))
    methods, matrix = agreement_matrix(records[-1])
    title = f"Explanation report — {path.parent}"
    style = (
        "body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222}h1{font-size:20px}"
        "h2{font-size:16px;margin-top:28px}"
        ".agree td,.agree th{padding:4px 10px;border:1px solid #ccc;text-align:center}"
        ".agree{border-collapse:collapse}.epoch{margin:8px 0;padding:6px;border-left:3px solid #ccc}"
        ".tag{color:#555;font-size:12px;margin-bottom:4px}.cell{margin:4px 0}summary{font-weight:bold;cursor:pointer}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(records)} epoch(s): {', '.join(str(int(r['epoch'])) for r in records)}; methods: "
        f"{html.escape(', '.join(methods) or 'none')}.</p>"
        f"<h2>Metrics over epochs</h2><div>{''.join(charts) or '<em>No metric logged.</em>'}</div>"
        f"<h2>Agreement between methods (Spearman, last epoch, mean over probe samples)</h2>"
        f"{_agreement_table(methods, matrix)}"
        f"<h2>Heatmap evolution of the probe samples</h2>{_evolution(records, path.parent)}"
        "</body></html>"
    )


def write_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write :func:`build_report` to ``output`` and return its path."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(run_dir), encoding="utf-8")
    return out
