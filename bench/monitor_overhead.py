"""Cost of one monitored validation on MiniLM, as ratios measured in the same run (median of several repeats).

Measures, on real tweets from the bundled corpus and the bundled all-MiniLM-L6-v2 (3-class head):
  * plain validation forward of the 32 probe samples (eval, sdpa, no_grad)                       -> "plain_32"
  * plain validation pass of a 256-sample validation set (batches of 32)                          -> "plain_256"
  * one plain forward+backward of the 32 samples (the training-step cost)                         -> "fwd_bwd_32"
  * Grad-SAM on the 32 samples (one recorded forward + one autograd.grad)                         -> "grad_sam_32"
  * deletion AUC (10 steps) of those maps (352 perturbed forwards, chunked, length-sorted)        -> "deletion_32"
  * the monitor's whole epoch-end work (Grad-SAM + deletion AUC, 32 samples, no rendering)        -> "monitor_32"

With ``--count default|seeds`` it times nothing: it runs the monitor's epoch-end work once on the demo's probe set
(the bundled MiniLM as ``lightning-xai demo`` builds it, the first 32 validation tweets) with the first demo's
methods (Grad-SAM + Random, deletion AUC) or the shipped ones (the six seed methods, deletion AUC and AOPC
comprehensiveness/sufficiency), and prints deterministic counts: the model forwards, rows and positions (padding
included) of the explanation passes and of the metric passes, the engine's requested / unique / reused rows, and the
scores (which must not move when the cost does). ``--profile`` adds the cProfile functions with the largest
cumulative time (timings: noisy on a shared machine; the counts are not).

Usage: python bench/monitor_overhead.py [--repeats 5] [--threads 2]
       python bench/monitor_overhead.py --count seeds [--profile]
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
from lightning_xai.probe import ProbeSet, forward_parameters  # noqa: E402
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


SETTINGS = {
    "default": (["grad_sam", "random"], [DeletionAUC(steps=10)]),
    "seeds": (["grad_sam", "legrad", "cp_lrp", "attn_lrp", "attention_shapley", "random"],
              [DeletionAUC(steps=10), "aopc_comprehensiveness", "aopc_sufficiency"]),
}


def count(setting: str, profile: bool) -> dict:
    """Forwards, rows and positions of one monitored validation on the demo's probe set (see the docstring)."""
    import cProfile
    import io
    import pstats

    from lightning_xai.explainers import resolve_explainers
    from lightning_xai.metrics import engine, resolve_metrics
    from lightning_xai.recipes import SentimentDataModule, TextClassifier

    torch.manual_seed(0)  # the demo's seed_everything(0): the same classifier head
    module = TextClassifier(model_name_or_path=None, num_labels=3)
    data = SentimentDataModule(model_name_or_path=None, train_size=2000, val_size=256, max_length=64, batch_size=32)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    model = module.model.eval()
    family = resolve_family(model)
    modality = family.build_modality(data.tokenizer, None)
    probe = ProbeSet(32)
    probe.input_keys = forward_parameters(model)
    probe.add(AdaptedBatch({k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"]))
    probe_data = probe.collate(modality)
    explainers = resolve_explainers(SETTINGS[setting][0])
    metrics = resolve_metrics(SETTINGS[setting][1])

    counts = {f"{stage}_{what}": 0 for stage in ("explain", "metric") for what in ("forwards", "rows", "positions")}

    scoring_now: list[bool] = []  # non-empty while the scoreboard's metric suite runs

    def hook(_module, _args, kwargs):
        # by stage, not by grad mode: the shared pass runs without autograd when no method differentiates it
        stage = "metric" if scoring_now else "explain"
        ids = kwargs["input_ids"]
        counts[f"{stage}_forwards"] += 1
        counts[f"{stage}_rows"] += ids.shape[0]
        counts[f"{stage}_positions"] += ids.numel()

    engine_stats: list[dict[str, int]] = []
    suite = engine.evaluate_suite

    def counted_suite(*args, **kwargs):  # the scoreboard's one call per chunk, with the engine's statistics
        scoring_now.append(True)
        try:
            return suite(*args, **kwargs, stats=engine_stats)
        finally:
            scoring_now.clear()

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    profiler = cProfile.Profile()
    import lightning_xai.scoring as scoring

    scoring.evaluate_suite = counted_suite
    try:
        scoreboard = Scoreboard([e.name for e in explainers], metrics, LogKeys(), ErrorPolicy("raise"), "random")
        start = time.perf_counter()
        profiler.enable()
        result = explain_probe_set(model, probe_data, explainers, scoreboard, family=family, modality=modality,
                                   num_heatmaps=4, policy=ErrorPolicy("raise"))
        profiler.disable()
        seconds = time.perf_counter() - start
    finally:
        scoring.evaluate_suite = suite
        handle.remove()
    report = {
        "setting": setting,
        "probe": f"32 tweets, padded width {probe_data.inputs['input_ids'].shape[1]}, "
                 f"{int(probe_data.inputs['attention_mask'].sum())} real tokens",
        "counts": counts,
        "engine": {key: sum(s.get(key, 0) for s in engine_stats) for key in engine_stats[0]} if engine_stats else {},
        "seconds_epoch_end (noisy)": round(seconds, 2),
        "scores": {key: round(float(value), 6) for key, value in sorted(result.values.items())
                   if "/agreement/" not in key},
    }
    if profile:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        report["profile"] = text.getvalue().splitlines()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--count", choices=sorted(SETTINGS), default=None,
                        help="count the forwards of one monitored validation of the demo instead of timing")
    parser.add_argument("--profile", action="store_true", help="with --count: add a cProfile summary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.count is not None:
        print(json.dumps(count(args.count, args.profile), indent=2))
        return

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
