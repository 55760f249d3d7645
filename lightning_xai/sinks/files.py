"""Files beside the run: PNG heatmaps, HTML token heatmaps and one JSON line per epoch with scores and maps.

Written on rank zero whatever the loggers (CSVLogger, MLflowLogger, none), unless the monitor's ``write_files`` is
off, so nothing computed is lost; ``lightning-xai report`` reads these files. Runs never mix: every JSON line names
its run, a folder that already holds another run's record is not appended to (the run writes into
``<directory>/run_<id>`` instead, with a warning), and :func:`files_directory` gives each run its own folder.
Layout under ``<directory>`` (paths from :mod:`lightning_xai.keys`)::

    explanations.jsonl                      one line per scheduled validation: scalars + probe samples' maps
    epoch_003/grad_sam/sample_00.png        rendered heatmap
    epoch_003/grad_sam/sample_00.html       token heatmap (text), every string escaped
    epoch_003/compare/sample_00.png         every method side by side
    evolution/grad_sam/sample_00.png        the sample's heatmaps over the epochs so far, oldest first, labelled
                                            (all of them, or EVOLUTION_MAX_FRAMES spread evenly from the first to
                                            the latest: a strip costs the same at epoch 300 as at epoch 8)
    epoch_003/attn_lrp/completion_tokens/sample_00.png   causal LMs: one map per completion token (matrix)
    evolution/attn_lrp/completion_tokens/sample_00.png   those matrices across epochs (as the strips above)

A causal LM's per-completion-token maps are also in the JSON line, raw (not normalised): each such sample's record
holds ``"completion_tokens": {"tokens": [...], "total": N, "maps": {method: [[row of len(tokens)], ...]}}``, one
row per explained completion token over the sample's ``"tokens"`` (the prompt's content tokens).
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lightning_xai.keys import JSONL_NAME, View, epoch_heatmaps, evolution_path, heatmap_epoch, heatmap_path
from lightning_xai.records import CompletionTokens
from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink

__all__ = ["EVOLUTION_MAX_FRAMES", "JSONL_NAME", "FilesSink", "completion_tokens_record", "evolution_frames",
           "files_directory", "new_run_id", "runs_in", "sample_record"]


#: Most epochs an evolution strip shows. Every validation rebuilds each strip from its frames' PNGs, so without a
#: bound a run's file writing would grow with every epoch (measured, six methods x four samples: 13.4 s at epoch 30
#: where epoch 0 took 0.7 s; with the bound about 1.4 s from epoch 8 on).
EVOLUTION_MAX_FRAMES = 8


def evolution_frames(frames: list[Path], limit: int | None = None) -> list[Path]:
    """The frames a strip shows: all of them, or ``limit`` spread evenly over them, the first and latest included.

    ``limit`` defaults to :data:`EVOLUTION_MAX_FRAMES`.

    Example:
        >>> [p.name for p in evolution_frames([Path(f"e{i}") for i in range(4)], limit=12)]
        ['e0', 'e1', 'e2', 'e3']
        >>> [p.name for p in evolution_frames([Path(f"e{i}") for i in range(30)], limit=4)]
        ['e0', 'e10', 'e19', 'e29']
    """
    limit = EVOLUTION_MAX_FRAMES if limit is None else limit
    if len(frames) <= limit:
        return list(frames)
    if limit < 2:
        return list(frames[-1:])
    span, steps = len(frames) - 1, limit - 1
    picks = sorted({(i * span + steps // 2) // steps for i in range(limit)})  # nearest frame, halves rounded up
    return [frames[i] for i in picks]


def new_run_id() -> str:
    """A run id: the start time and a random suffix (``20261130-131500-3fa2c1``)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def files_directory(
    requested: str | None, log_dir: str, versioned: bool, fast_dev_run: bool, run_id: str
) -> str | None:
    """Where a run's files go, so that two runs never share a record.

    Args:
        requested: the folder the user asked for (``files_dir=``): used as given.
        log_dir: the trainer's log directory (or its root directory).
        versioned: whether ``log_dir`` is the run's own versioned folder (TensorBoard and CSV loggers).
        fast_dev_run: a smoke test: nothing is written unless a folder was asked for.
        run_id: the run's id.

    Returns:
        ``requested``; else ``<log_dir>/xai`` for a versioned logger; else ``<log_dir>/xai/run_<run id>``; None
        under ``fast_dev_run`` without a requested folder.

    Example:
        >>> files_directory(None, "runs/demo/version_3", True, False, "r1")
        'runs/demo/version_3/xai'
        >>> files_directory(None, ".", False, False, "r1"), files_directory(None, ".", False, True, "r1")
        ('./xai/run_r1', None)
    """
    if requested is not None:
        return requested
    if fast_dev_run:
        return None
    base = os.path.join(log_dir, "xai")
    return base if versioned else os.path.join(base, f"run_{run_id}")


def runs_in(jsonl: Path) -> list[str | None]:
    """The run ids of a record file, in first-seen order (None for lines written before runs had ids)."""
    runs: dict[str | None, None] = {}
    if jsonl.exists():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                runs[json.loads(line).get("run")] = None
    return list(runs)


def sample_record(sample: ProbeSample) -> dict[str, Any]:
    """A JSON-serialisable view of a probe sample (images are not stored, their PNGs are)."""
    return {
        "index": sample.index,
        "label": sample.label,
        "prediction": sample.prediction,
        "probability": sample.probability,
        "explained": sample.explained,
        "tokens": sample.tokens,
        "image_shape": None if sample.image is None else list(sample.image.shape),
        "maps": _maps_json(sample.maps),
        "signed": dict(sample.signed),
        **({} if sample.completion_tokens is None else {"completion_tokens": completion_tokens_record(
            sample.completion_tokens)}),
    }


def completion_tokens_record(view: CompletionTokens) -> dict[str, Any]:
    """The JSON view of a causal LM sample's per-completion-token maps (raw relevance, rows x prompt tokens).

    Example:
        >>> from lightning_xai.records import CompletionTokens
        >>> completion_tokens_record(CompletionTokens(["v2"], total=2, maps={"attn_lrp": np.array([[0.25, 0.5]])}))
        {'tokens': ['v2'], 'total': 2, 'maps': {'attn_lrp': [[0.25, 0.5]]}}
    """
    return {"tokens": list(view.tokens), "total": int(view.total), "maps": _maps_json(view.maps)}


def _maps_json(maps: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Each method's scores as nested float lists."""
    return {method: np.asarray(values, dtype=float).tolist() for method, values in maps.items()}


class FilesSink(Sink):
    """Writes PNG/HTML/JSONL files under a directory (created on first write).

    Args:
        directory: where to write, typically ``<trainer.log_dir>/xai`` (see :func:`files_directory`).
        run_id: the run's id, written on every JSON line (a new one by default).
    """

    def __init__(self, directory: str | os.PathLike[str], run_id: str | None = None) -> None:
        super().__init__(logger=None)
        self.directory = Path(directory)
        self.run_id = run_id or new_run_id()
        self._checked = False

    @classmethod
    def for_run(cls, loggers: Iterable[Any], files_dir: str | None = None, run_id: str | None = None) -> list[Sink]:
        """One files sink writing to ``files_dir`` when files are on (``files_dir`` given), else none."""
        return [] if files_dir is None else [cls(files_dir, run_id)]

    def log_epoch(self, report: EpochReport) -> None:
        """Append the epoch's JSON line, then write its PNG and HTML files."""
        self._own_directory()
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "run": self.run_id,
            "epoch": report.epoch,
            "step": report.step,
            "prefix": report.prefix,
            "scalars": report.scalars,
            "higher_is_better": report.higher_is_better,
            "samples": [sample_record(sample) for sample in report.samples],
        }
        with open(self.directory / JSONL_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
        for heatmap in report.heatmaps:
            path = heatmap_path(self.directory, report.epoch, heatmap.method, heatmap.sample, view=heatmap.view)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(heatmap.png)
            self._write_evolution(heatmap.method, heatmap.sample, heatmap.view)
            if heatmap.html is not None:
                page = f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{heatmap.html}</body></html>'
                path.with_suffix(".html").write_text(page, encoding="utf-8")

    def _own_directory(self) -> None:
        """Once: if the folder holds another run's record, write into ``<folder>/run_<id>`` instead (and say so)."""
        if self._checked:
            return
        self._checked = True
        others = [run for run in runs_in(self.directory / JSONL_NAME) if run != self.run_id]
        if others:
            own = self.directory / f"run_{self.run_id}"
            warnings.warn(
                f"{self.directory} already holds the explanation record of another run ({others[0]}); this run "
                f"({self.run_id}) writes into {own} so that the two never mix.",
                stacklevel=2,
            )
            self.directory = own

    def _write_evolution(self, method: str | None, sample: int, view: View = "map") -> None:
        """Rebuild one sample's evolution strip from its epochs' PNGs (at most :data:`EVOLUTION_MAX_FRAMES`)."""
        from lightning_xai.viz import evolution_strip
        from lightning_xai.viz.png import read_png, write_png

        frames = evolution_frames(epoch_heatmaps(self.directory, method, sample, view))
        images = [read_png(frame) for frame in frames]
        labels = [f"epoch {heatmap_epoch(self.directory, frame)}" for frame in frames]
        target = evolution_path(self.directory, method, sample, view)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_png(target, evolution_strip(images, labels=labels))

