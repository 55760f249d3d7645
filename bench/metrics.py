"""Metric-suite cost on 64 short MiniLM sentences, 3 methods (Grad-SAM, Random, last-layer [CLS] attention).

Prints JSON (medians of --repeats runs):
  * suite_s: deletion + insertion AUC (10 steps), AOPC comprehensiveness + sufficiency (ERASER), log-odds and
    tau-LOO (deletion) for the 3 methods via one evaluate_suite call (shared, deduplicated forwards);
  * floor_s: the time the suite's model forwards would take for exactly the unique, unpadded tokens it needs
    (suite_forward_s x real tokens / forwarded tokens, i.e. at the suite's own batch efficiency); suite_over_floor =
    suite_s / floor_s (target <= 1.2) counts padding and everything outside the model (masks, dedup, scoring);
    exact_length_buckets_s forwards the same unique rows bucketed by exact length (no padding but many small
    forwards), for comparison;
  * ours_ferret_s vs ferret_loop_s: AOPC comprehensiveness + sufficiency + tau-LOO with ferret 0.4.2's defaults
    (thresholds 10..100%, int(), only_pos, dedup, token deletion + decode + re-tokenise, i.e. removal="retokenize")
    for the 3 methods; ferret_loop is a faithful re-implementation of ferret's per-sample evaluator loop (one padded
    forward per sample per evaluator), ferret_speedup = ferret_loop_s / ours_ferret_s (target >= 3);
    max_abs_diff_vs_ferret compares the numbers (target: float noise); max_abs_diff_delete_vs_retokenize shows how
    much the round trip itself moves them.

  * with --ferret DIR (an unpacked ferret-xai 0.4.2 wheel): ferret's own evaluators timed on the same work
    (ferret_0_4_2_itself: seconds, speedup, differences).

Usage: python bench/metrics.py [--repeats 3] [--threads 2] [--ferret DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from lightning_xai import explain  # noqa: E402
from lightning_xai.explain import logits_of  # noqa: E402
from lightning_xai.explainers import GradSAM, Random  # noqa: E402
from lightning_xai.metrics import (  # noqa: E402
    AOPCComprehensiveness,
    AOPCSufficiency,
    DeletionAUC,
    InsertionAUC,
    LeaveOneOutTau,
    LogOdds,
    evaluate_suite,
)
from lightning_xai.metrics.engine import resolve_modality  # noqa: E402
from lightning_xai.modalities import TextModality, select  # noqa: E402
from lightning_xai.recipes.bundled import minilm_path, sentiment_csv_path  # noqa: E402
from lightning_xai.recipes.text_data import read_sentiment_csv  # noqa: E402
from lightning_xai.types import Explanation  # noqa: E402


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ferret_loop(model, tokenizer, texts, scores, targets):
    """ferret 0.4.2's AOPC_Comprehensiveness / AOPC_Sufficiency / TauLOO compute_evaluation, per sample."""

    def probs(batch_texts, target):
        enc = tokenizer(batch_texts, return_tensors="pt", padding="longest")
        with torch.no_grad():
            return model(**enc).logits.softmax(-1)[:, target].numpy()

    def top_k(score, k):  # _get_id_tokens_top_k with only_pos=True
        return [i for i in np.array(score).argsort()[-k:][::-1] if score[i] > 0]

    out = {"comp": [], "suff": [], "loo": []}
    for text, score, target in zip(texts, scores, targets, strict=False):
        score = np.asarray(score)
        for kind in ("comp", "suff"):
            baseline = probs([text], target)[0]
            ids = tokenizer(text)["input_ids"][1:-1]
            perturbed, last = [], None
            for v in np.arange(0.1, 1.1, 0.1):
                k = int(v * len(score))
                if not (0 < k <= len(score)):
                    continue
                top = top_k(score, k)
                if last is not None and set(top) == last:
                    continue
                last = set(top)
                sample = np.array(ids)
                kept = np.delete(sample, top) if kind == "comp" else sample[np.sort(np.array(top, dtype=int))]
                perturbed.append(tokenizer.decode(kept, skip_special_tokens=False))
            out[kind].append(float(np.mean(baseline - probs(perturbed, target))))
        baseline = probs([text], target)[0]
        ids = tokenizer(text)["input_ids"][1:-1]
        samples = [tokenizer.decode(ids[:i] + ids[i + 1 :], skip_special_tokens=False) for i in range(len(ids))]
        loo = baseline - probs(samples, target)
        x, y = loo, score
        n = len(x)
        s = nx = ny = 0
        for i in range(n):
            for j in range(i + 1, n):
                a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
                s, nx, ny = s + a * b, nx + (a != 0), ny + (b != 0)
        out["loo"].append(float(s / np.sqrt(nx * ny)) if nx and ny else float("nan"))
    return out


def load_ferret_evaluators(path: str):
    """ferret 0.4.2's own evaluator classes, from an unpacked ``ferret-xai==0.4.2`` wheel at ``path``.

    ferret cannot be installed beside our stack (it pins transformers < 5 and numpy < 2), and its package
    ``__init__`` imports captum, lime and shap; its evaluators need none of them, so their modules are loaded under a
    bare ``ferret`` package whose ``__init__`` is not run. Get the wheel with ``pip download ferret-xai==0.4.2
    --no-deps`` and unpack it (``python -m zipfile -e <wheel> DIR``).
    """
    import importlib
    import sys
    import types

    package = types.ModuleType("ferret")
    package.__path__ = [os.path.join(path, "ferret")]
    sys.modules.setdefault("ferret", package)
    measures = importlib.import_module("ferret.evaluators.faithfulness_measures")
    explanation = importlib.import_module("ferret.explainers.explanation")
    return measures, explanation.Explanation


def ferret_run(measures, explanation_class, model, tokenizer, texts, scores, targets):
    """AOPC comprehensiveness, sufficiency and tau-LOO with ferret's evaluators and defaults, one sample at a time."""
    evaluators = {"comp": measures.AOPC_Comprehensiveness_Evaluation(model, tokenizer),
                  "suff": measures.AOPC_Sufficiency_Evaluation(model, tokenizer),
                  "loo": measures.TauLOO_Evaluation(model, tokenizer)}
    out: dict[str, list[float]] = {key: [] for key in evaluators}
    for text, score, target in zip(texts, scores, targets, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
        full = np.concatenate([[0.0], np.asarray(score), [0.0]])  # ferret drops the [CLS]/[SEP] scores itself
        explanation = explanation_class(text, tokens, full, "ours", target)
        for key, evaluator in evaluators.items():
            out[key].append(float(evaluator.compute_evaluation(explanation, target=target).score))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--ferret", default=None, help="an unpacked ferret-xai 0.4.2 wheel: also time ferret itself")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)  # the classification head is new: seed it so every run scores the same model
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3).eval()
    texts, _ = read_sentiment_csv(sentiment_csv_path())
    texts = [t for t in texts if len(tokenizer(t)["input_ids"]) <= 24][: args.n]
    inputs = dict(tokenizer(texts, return_tensors="pt", padding=True))
    inputs.pop("token_type_ids", None)
    modality = TextModality.from_tokenizer(tokenizer)
    maps = explain(model, inputs, [GradSAM(), Random(seed=0)], modality=modality)
    backend = model.config._attn_implementation
    model.set_attn_implementation("eager")
    with torch.no_grad():
        att = model(**inputs, output_attentions=True).attentions[-1].mean(dim=1)[:, 0]  # [CLS] row, head mean
    model.set_attn_implementation(backend)
    g = maps["grad_sam"]
    maps["attention"] = Explanation("attention", att * g.valid_mask, g.valid_mask, g.special_mask, g.target)

    forward_seconds = [0.0]

    def forward(x):
        start = time.perf_counter()
        out = logits_of(model(**x))
        forward_seconds[0] += time.perf_counter() - start
        return out

    suite = [DeletionAUC(steps=10), InsertionAUC(steps=10), AOPCComprehensiveness(), AOPCSufficiency(), LogOdds(),
             LeaveOneOutTau()]
    stats: list = []
    evaluate_suite(forward, inputs, maps, modality, suite, stats=stats)
    runs = []
    for _ in range(args.repeats):
        forward_seconds[0] = 0.0
        start = time.perf_counter()
        evaluate_suite(forward, inputs, maps, modality, suite)
        runs.append((time.perf_counter() - start, forward_seconds[0]))
    suite_s, suite_forward_s = sorted(runs)[len(runs) // 2]
    real = sum(group["real_tokens"] for group in stats)
    forwarded = sum(group["tokens"] for group in stats)
    # floor: the model forwards of exactly the needed (unique, unpadded) tokens at the suite's own batch efficiency
    floor_s = suite_forward_s * real / forwarded

    # for comparison: the same unique rows bucketed by exact length (no padding at all, but many small forwards)
    def exact_length_buckets():
        for removal in ({m.removal for m in suite}):
            group = [m for m in suite if m.removal == removal]
            masks = torch.cat([m.removal_masks(e) for m in group for e in maps.values()], dim=1)
            b, r, n = masks.shape
            keys = torch.cat([torch.arange(b).repeat_interleave(r)[:, None], masks.reshape(b * r, n).long()], 1)
            unique = torch.unique(keys, dim=0)
            mod = resolve_modality(modality, removal)
            rows = mod.remove(select(inputs, unique[:, 0]), unique[:, 1:].bool())
            lengths = mod.lengths(rows)
            with torch.no_grad():
                for length in lengths.unique().tolist():
                    idx = (lengths == length).nonzero()[:, 0]
                    for s in range(0, len(idx), 256):
                        model(**mod.trim(select(rows, idx[s : s + 256]), length))

    buckets_s = timed(exact_length_buckets, args.repeats)

    # ferret's conventions, decode + re-tokenise round trip included (removal="retokenize")
    ferret_suite = [AOPCComprehensiveness(convention="ferret"), AOPCSufficiency(convention="ferret"),
                    LeaveOneOutTau(removal="retokenize")]
    ours = evaluate_suite(forward, inputs, maps, modality, ferret_suite)
    ours_s = timed(lambda: evaluate_suite(forward, inputs, maps, modality, ferret_suite), args.repeats)
    changed = 0
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        changed += tokenizer(tokenizer.decode(ids[1:-1]))["input_ids"] != ids
    def time_and_compare(run):
        """Per method: median seconds of ``run(scores, targets)`` (summed over methods), |run - ours| per metric."""
        total, diffs, outputs = 0.0, {}, {}
        for name, exp in maps.items():
            scores = [exp.relevance[i][exp.content_mask[i]].tolist() for i in range(len(texts))]
            targets = exp.target.tolist()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                outputs[name] = run(scores, targets)
                times.append(time.perf_counter() - start)
            total += statistics.median(times)
            for j, key in enumerate(("comp", "suff", "loo")):
                a, b = torch.tensor(outputs[name][key]), ours[j][name].double()
                both_nan = torch.isnan(a) & torch.isnan(b)
                diffs[f"{name}/{key}"] = float((a - b).abs().masked_fill(both_nan, 0).max())  # NaN if one is NaN
        return total, diffs, outputs

    ferret_total, diffs, loop_outputs = time_and_compare(
        lambda scores, targets: ferret_loop(model, tokenizer, texts, scores, targets))
    per_method = {name: {k: float(np.nanmean(v)) for k, v in got.items()} for name, got in loop_outputs.items()}
    ferret_real = None
    if args.ferret:
        measures, explanation_class = load_ferret_evaluators(args.ferret)
        real_total, real_diffs, _ = time_and_compare(
            lambda scores, targets: ferret_run(measures, explanation_class, model, tokenizer, texts, scores, targets))
        ferret_real = {"ferret_s": real_total, "speedup": real_total / ours_s,
                       "max_abs_diff": max(real_diffs.values()), "abs_diff": real_diffs}

    # the same three metrics deleting tokens without the round trip (our default for tau-LOO): how much it matters
    delete_suite = [AOPCComprehensiveness(convention="ferret", removal="delete"),
                    AOPCSufficiency(convention="ferret", removal="delete"), LeaveOneOutTau()]
    deleted = evaluate_suite(forward, inputs, maps, modality, delete_suite)
    delete_diff = max(float((deleted[j][name] - ours[j][name]).abs().nan_to_num(0).max())
                      for j in range(3) for name in maps)
    print(json.dumps({
        "samples": len(texts), "threads": args.threads, "engine_stats": stats,
        "suite_s": suite_s, "suite_forward_s": suite_forward_s, "padded_token_fraction": 1 - real / forwarded,
        "floor_s": floor_s, "suite_over_floor": suite_s / floor_s, "exact_length_buckets_s": buckets_s,
        "ours_ferret_s": ours_s, "ferret_loop_s": ferret_total, "ferret_speedup": ferret_total / ours_s,
        "max_abs_diff_vs_ferret": max(diffs.values()), "abs_diff_vs_ferret": diffs,
        "ferret_0_4_2_itself": ferret_real,
        "retokenise_changed_sentences": int(changed), "max_abs_diff_delete_vs_retokenize": delete_diff,
        "ferret_means": per_method,
    }, indent=1))


if __name__ == "__main__":
    main()
