"""What monitoring adds to a whole fine-tuning run: the demo recipe for one epoch, with and without the monitor.

Variants of the bundled ``minilm_sentiment`` recipe, each run as its own ``lightning-xai fit`` process
(whole-process wall time: imports, data, training, validation, monitoring, files), interleaved, median of
``--repeats``:

  * ``none``:    the recipe without ExplanationMonitor (the baseline)
  * ``default``: the monitor's defaults as the first demo had them: Grad-SAM + Random, deletion AUC (10 steps)
  * ``seeds``:   the demo as it ships: Grad-SAM, LeGrad, CP-LRP, AttnLRP, attention-Shapley + Random, deletion AUC
                 and AOPC comprehensiveness/sufficiency
  * ``seeds_deletion``: the same six methods with the monitor's default metric only (deletion AUC, 10 steps)

Overheads are reported as ``(variant - none) / none`` of the medians, with every run's time so the spread is visible.

Usage: python bench/fit_overhead.py [--repeats 3] [--epochs 1] [--device cpu|cuda] [--variants none seeds ...]
                                   [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lightning_xai.recipes.bundled import recipe_path

SEED_METHODS = ["grad_sam", "legrad", "cp_lrp", "attn_lrp", "attention_shapley", "random"]


def variants() -> dict[str, dict]:
    """The recipe as YAML dicts: without the monitor, with the first demo's monitor, the shipped one, and its six
    methods with deletion AUC only."""
    recipe = yaml.safe_load(recipe_path("minilm_sentiment").read_text())
    callbacks = recipe["trainer"]["callbacks"]
    monitor = next(c for c in callbacks if c["class_path"] == "lightning_xai.ExplanationMonitor")
    others = [c for c in callbacks if c is not monitor and "ModelCheckpoint" not in c["class_path"]]
    out = {}
    for name, explainers, metrics in (
        ("none", None, None),
        ("default", ["grad_sam", "random"], [{"class_path": "lightning_xai.metrics.DeletionAUC",
                                              "init_args": {"steps": 10}}]),
        ("seeds", SEED_METHODS, monitor["init_args"]["metrics"]),
        ("seeds_deletion", SEED_METHODS, [{"class_path": "lightning_xai.metrics.DeletionAUC",
                                           "init_args": {"steps": 10}}]),
    ):
        config = json.loads(json.dumps(recipe))
        config["trainer"]["enable_checkpointing"] = False  # the same work in every variant
        config["trainer"]["callbacks"] = list(others)
        if explainers is not None:
            init_args = dict(monitor["init_args"], explainers=explainers, metrics=metrics)
            config["trainer"]["callbacks"].append({"class_path": monitor["class_path"], "init_args": init_args})
        out[name] = config
    return out


def run_once(config_path: Path, work: Path, epochs: int, accelerator: str) -> float:
    """Wall seconds of one ``lightning-xai fit`` process."""
    command = [sys.executable, "-m", "lightning_xai.cli", "fit", "--config", str(config_path),
               f"--trainer.max_epochs={epochs}", f"--trainer.accelerator={accelerator}",
               f"--trainer.logger.init_args.save_dir={work / 'runs'}", f"--trainer.default_root_dir={work}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(variants()),
                        help="a subset of the variants ('none' is always run)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    options = parser.parse_args()
    accelerator = "gpu" if options.device == "cuda" else "cpu"
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="lxai_fit_overhead_") as folder:
        work = Path(folder)
        paths = {}
        chosen = {"none", *(options.variants or variants())}
        for name, config in variants().items():
            if name not in chosen:
                continue
            paths[name] = work / f"{name}.yaml"
            paths[name].write_text(yaml.safe_dump(config, sort_keys=False))
        for repeat in range(options.repeats):
            for name, path in paths.items():  # interleaved: drift on a shared machine hits every variant alike
                seconds = run_once(path, work, options.epochs, accelerator)
                times.setdefault(name, []).append(seconds)
                print(f"repeat {repeat + 1}/{options.repeats} {name:14s} {seconds:7.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                   f"{__import__('torch').get_num_threads()}, device {options.device}",
        "epochs": options.epochs,
        "seconds": times,
        "median_seconds": medians,
        "overhead": {name: (medians[name] - medians["none"]) / medians["none"] for name in medians if name != "none"},
    }
    print(json.dumps(result, indent=2))
    if options.out:
        Path(options.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
