"""Cost of one monitored validation on MiniLM, as ratios measured in the same run (median of several repeats).

Measures, on real tweets from the bundled corpus and the bundled all-MiniLM-L6-v2 (3-class head):
  * plain validation forward of the 32 probe samples (eval, sdpa, no_grad)                       -> "plain_32"
  * plain validation pass of a 256-sample validation set (batches of 32)                          -> "plain_256"
  * one plain forward+backward of the 32 samples (the training-step cost)                         -> "fwd_bwd_32"
  * Grad-SAM on the 32 samples (one recorded forward + one autograd.grad)                         -> "grad_sam_32"
  * deletion AUC (10 steps) of those maps (352 perturbed forwards, chunked, length-sorted)        -> "deletion_32"
  * the monitor's whole epoch-end work (Grad-SAM + deletion AUC, 32 samples, no rendering)        -> "monitor_32"

Usage: python bench/monitor_overhead.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from lightning_xai import AdaptedBatch, explain  # noqa: E402
from lightning_xai._runtime import ErrorPolicy  # noqa: E402
from lightning_xai.explainers import GradSAM  # noqa: E402
from lightning_xai.families import resolve_family  # noqa: E402
from lightning_xai.keys import LogKeys  # noqa: E402
from lightning_xai.metrics import DeletionAUC, deletion_auc  # noqa: E402
from lightning_xai.modalities import TextModality  # noqa: E402
from lightning_xai.probe import ProbeSet  # noqa: E402
from lightning_xai.recipes.bundled import minilm_path, sentiment_csv_path  # noqa: E402
from lightning_xai.run import explain_probe_set  # noqa: E402
from lightning_xai.scoring import Scoreboard  # noqa: E402
from lightning_xai.types import logits_of  # noqa: E402


def load_texts(n: int) -> list[str]:
    import csv

    with open(sentiment_csv_path(), newline="", encoding="utf-8", errors="replace") as handle:
        rows = [row["text"] for row in csv.DictReader(handle) if row.get("text", "").strip()]
    return rows[:n]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3, attn_implementation="sdpa")
    texts = load_texts(256)
    encode = lambda batch: dict(tokenizer(batch, padding=True, truncation=True, max_length=args.max_length,  # noqa
                                          return_tensors="pt"))
    probe = encode(texts[:32])
    val_batches = [encode(texts[i : i + 32]) for i in range(0, 256, 32)]
    modality = TextModality.from_tokenizer(tokenizer)
    model.eval()

    def plain_32():
        with torch.no_grad():
            model(**probe)

    def plain_256():
        with torch.no_grad():
            for batch in val_batches:
                model(**batch)

    def fwd_bwd_32():
        model.train()
        logits = model(**probe).logits
        torch.autograd.grad(logits.logsumexp(-1).sum(), [p for p in model.parameters() if p.requires_grad])
        model.eval()

    maps = explain(model, probe, [GradSAM()], modality=modality)["grad_sam"]

    def grad_sam_32():
        explain(model, probe, [GradSAM()], modality=modality)

    def deletion_32():
        deletion_auc(lambda x: logits_of(model(**x)), probe, maps, modality, steps=10)

    # what ExplanationMonitor does at one scheduled validation: the engine on the collected probe set
    family = resolve_family(model)
    probe_set = ProbeSet(32)
    probe_set.add(AdaptedBatch(probe))
    probe_data = probe_set.collate(modality)

    def monitor_32():
        scoreboard = Scoreboard(["grad_sam"], [DeletionAUC(steps=10)], LogKeys(), ErrorPolicy())
        explain_probe_set(model, probe_data, [GradSAM()], scoreboard, family=family, modality=modality,
                          keep_samples=False)

    timings = {}
    for name, fn in [("plain_32", plain_32), ("plain_256", plain_256), ("fwd_bwd_32", fwd_bwd_32),
                     ("grad_sam_32", grad_sam_32), ("deletion_32", deletion_32), ("monitor_32", monitor_32)]:
        timings[name] = median_time(fn, args.repeats)
    tokens = int(probe["attention_mask"].sum())
    report = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "probe": f"32 tweets, padded width {probe['input_ids'].shape[1]}, {tokens} real tokens",
        "median_seconds": {k: round(v, 4) for k, v in timings.items()},
        "ratios": {
            "monitor_32 / plain_32 (same samples)": round(timings["monitor_32"] / timings["plain_32"], 2),
            "monitor_32 / plain_256 (a 256-sample validation pass)": round(
                timings["monitor_32"] / timings["plain_256"], 2
            ),
            "grad_sam_32 / fwd_bwd_32": round(timings["grad_sam_32"] / timings["fwd_bwd_32"], 2),
            "deletion_32 / plain_32 (352 perturbed rows vs 32 rows)": round(
                timings["deletion_32"] / timings["plain_32"], 2
            ),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
