"""Files beside the run: PNG heatmaps, HTML token heatmaps and one JSON line per epoch with scores and maps.

Written on rank zero whatever the loggers (CSVLogger, MLflowLogger, none), unless the monitor's ``write_files`` is
off, so nothing computed is lost; ``lightning-xai report`` reads these files. Layout under ``<directory>`` (paths
from :mod:`lightning_xai.keys`)::

    explanations.jsonl                      one line per scheduled validation: scalars + probe samples' maps
    epoch_003/grad_sam/sample_00.png        rendered heatmap
    epoch_003/grad_sam/sample_00.html       token heatmap (text), every string escaped
    epoch_003/compare/sample_00.png         every method side by side
    evolution/grad_sam/sample_00.png        the sample's heatmaps of every epoch so far, oldest first
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lightning_xai.keys import JSONL_NAME, epoch_heatmaps, evolution_path, heatmap_path
from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink

__all__ = ["JSONL_NAME", "FilesSink", "sample_record"]


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
        "maps": {method: np.asarray(values, dtype=float).tolist() for method, values in sample.maps.items()},
        "signed": dict(sample.signed),
    }


class FilesSink(Sink):
    """Writes PNG/HTML/JSONL files under a directory (created on first write).

    Args:
        directory: where to write, typically ``<trainer.log_dir>/xai``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(logger=None)
        self.directory = Path(directory)

    @classmethod
    def for_run(cls, loggers: Iterable[Any], files_dir: str | None = None) -> list[Sink]:
        """One files sink writing to ``files_dir`` when files are on (``files_dir`` given), else none."""
        return [] if files_dir is None else [cls(files_dir)]

    def log_epoch(self, report: EpochReport) -> None:
        """Append the epoch's JSON line, then write its PNG and HTML files."""
        from lightning_xai.viz.png import write_png

        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
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
            path = heatmap_path(self.directory, report.epoch, heatmap.method, heatmap.sample)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(path, heatmap.rgb)
            self._write_evolution(heatmap.method, heatmap.sample)
            if heatmap.html is not None:
                page = f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{heatmap.html}</body></html>'
                path.with_suffix(".html").write_text(page, encoding="utf-8")

    def _write_evolution(self, method: str | None, sample: int) -> None:
        """Rebuild one sample's evolution strip from every epoch's PNG of it (small: a few images)."""
        from matplotlib.image import imread

        from lightning_xai.viz import evolution_strip
        from lightning_xai.viz.png import write_png

        frames = epoch_heatmaps(self.directory, method, sample)
        images = [(imread(frame)[..., :3] * 255).round().astype(np.uint8) for frame in frames]
        target = evolution_path(self.directory, method, sample)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_png(target, evolution_strip(images))
