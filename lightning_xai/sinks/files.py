"""Files beside the run: PNG heatmaps, HTML token heatmaps and one JSON line per epoch with scores and maps.

Always written on rank zero, whatever the loggers (CSVLogger, MLflowLogger, none), so nothing computed is lost;
``lightning-xai report`` reads these files. Layout under ``<directory>``::

    explanations.jsonl                      one line per scheduled validation: scalars + probe samples' maps
    epoch_003/grad_sam/sample_00.png        rendered heatmap
    epoch_003/grad_sam/sample_00.html       token heatmap (text), every string escaped
    evolution/grad_sam/sample_00.png        the sample's heatmaps of every epoch so far, oldest first
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from lightning_xai.sinks.base import EpochReport, ProbeSample, Sink

#: File name of the per-epoch record.
JSONL_NAME = "explanations.jsonl"


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


class FilesSink(Sink):
    """Writes PNG/HTML/JSONL files under a directory (created on first write).

    Args:
        directory: where to write, typically ``<trainer.log_dir>/xai``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(logger=None)
        self.directory = Path(directory)

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        """Not chosen per logger: the callback always adds one files sink."""
        return False

    def log_epoch(self, report: EpochReport) -> None:
        """Append the epoch's JSON line, then write its PNG and HTML files."""
        from lightning_xai.viz import token_heatmap_html
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
        epoch_dir = self.directory / f"epoch_{report.epoch:03d}"
        for tag, image in report.images.items():
            method, _, rest = tag[len(report.prefix) :].partition("/")
            name = rest.rsplit("/", 1)[-1]
            path = epoch_dir / _safe(method) / f"{_safe(name)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(path, image)
            self._write_evolution(_safe(method), f"{_safe(name)}.png")
        for sample in report.samples:
            if sample.tokens is None:
                continue
            for method, values in sample.maps.items():
                path = epoch_dir / _safe(method) / f"sample_{sample.index:02d}.html"
                path.parent.mkdir(parents=True, exist_ok=True)
                title = f"{method} · sample {sample.index} · epoch {report.epoch}"
                page = token_heatmap_html(sample.tokens, np.asarray(values), title=title, caption=sample.caption(),
                                          signed=sample.signed.get(method, False), standalone=True)
                path.write_text(page, encoding="utf-8")

    def _write_evolution(self, method: str, name: str) -> None:
        """Rebuild ``evolution/<method>/<name>`` from every epoch's PNG of that sample (small: a few images)."""
        from matplotlib.image import imread

        from lightning_xai.viz import evolution_strip
        from lightning_xai.viz.png import write_png

        frames = sorted(self.directory.glob(f"epoch_*/{method}/{name}"))
        images = [(imread(frame)[..., :3] * 255).round().astype(np.uint8) for frame in frames]
        target = self.directory / "evolution" / method / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_png(target, evolution_strip(images))
