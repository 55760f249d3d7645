"""What each monitored validation costs, epoch after epoch: it must not grow with the length of the run.

Runs the bundled ``minilm_sentiment`` recipe in this process for ``--epochs`` short epochs (``--train-batches``
training batches each, the whole validation set) with the monitor of ``--setting``: ``seeds`` (the demo's six methods
and three metrics), ``seeds_deletion`` (the six methods, deletion AUC only) or ``default`` (Grad-SAM + Random,
deletion AUC). Per scheduled validation it times the monitor's epoch-end work (explanations, metrics, rendering,
every sink) and, inside it, the sinks (``publish``: rendering and writing; with ``--background on`` they run on the
monitor's worker thread and the epoch-end time is what the training thread waits for), and the fit's wall time.
All but the sinks is the same computation every epoch; the sinks' files (evolution strips) could grow with it.

Usage: python bench/validation_cost.py [--epochs 15] [--train-batches 2] [--setting seeds|seeds_deletion|default]
                                       [--background auto|on|off] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-batches", type=int, default=2)
    parser.add_argument("--setting", choices=("seeds", "seeds_deletion", "default"), default="seeds")
    parser.add_argument("--background", choices=("auto", "on", "off"), default="auto",
                        help="the monitor's publish_in_background (auto: on an accelerator only)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    options = parser.parse_args()

    import fit_overhead  # beside this file: the recipe variants

    from lightning_xai import cli
    from lightning_xai.callbacks import explanation_monitor

    config = fit_overhead.variants()[options.setting]
    monitor = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ExplanationMonitor"))
    monitor["init_args"]["publish_in_background"] = {"auto": None, "on": True, "off": False}[options.background]
    epoch_end: list[float] = []
    publishing: list[float] = []
    original_end = explanation_monitor.ExplanationMonitor.on_validation_epoch_end
    original_publish = explanation_monitor.publish

    def timed_end(self, trainer, pl_module):  # noqa: ANN001
        start = time.perf_counter()
        original_end(self, trainer, pl_module)
        if not trainer.sanity_checking:
            epoch_end.append(time.perf_counter() - start)

    def timed_publish(*args, **kwargs):  # noqa: ANN002, ANN003
        start = time.perf_counter()
        try:
            return original_publish(*args, **kwargs)
        finally:
            publishing.append(time.perf_counter() - start)

    explanation_monitor.ExplanationMonitor.on_validation_epoch_end = timed_end
    explanation_monitor.publish = timed_publish
    try:
        with tempfile.TemporaryDirectory(prefix="lxai_validation_cost_") as folder:
            path = Path(folder) / "recipe.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            cwd = os.getcwd()
            os.chdir(folder)
            start = time.perf_counter()
            try:
                cli.main(["fit", "--config", str(path), f"--trainer.max_epochs={options.epochs}",
                          f"--trainer.limit_train_batches={options.train_batches}",
                          "--trainer.enable_progress_bar=false", "--trainer.logger.init_args.save_dir=runs"])
            finally:
                wall = time.perf_counter() - start
                os.chdir(cwd)
    finally:
        explanation_monitor.ExplanationMonitor.on_validation_epoch_end = original_end
        explanation_monitor.publish = original_publish
    result = {
        "setting": options.setting,
        "background": options.background,
        "wall_seconds": round(wall, 1),
        "epoch_end_seconds": [round(t, 2) for t in epoch_end],
        "publish_seconds": [round(t, 2) for t in publishing],
    }
    print(json.dumps(result, indent=2))
    if options.out:
        Path(options.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
