"""Cost of each explainer relative to one plain forward+backward, on the bundled MiniLM (batch 32 x 64 tokens).

Prints JSON. Every timed call runs round-robin with the others (one call of each per round, ``--repeats`` rounds
after one warm-up round), so a change in machine load hits all of them alike; per call it reports the median time
divided by the median time of one plain forward + ``torch.autograd.grad`` of the summed arg-max logits w.r.t. the
input embeddings, and the spread as the smallest and largest per-round ratio (each round's time over the same
round's plain forward+backward).

* ``ratio_to_forward_backward``: ``explain(model, batch, [method])``: the method plus the forward every
  ``explain()`` call shares (``shared_pass``, listed on its own), except where LRP's own pass stands in for it
  (an LRP-only call on the model's own attention: ``explanation_pass.may_skip_shared_pass``).
* ``lrp_pass``: the LRP pass alone (``lrp(model, batch, target, ...)`` with a fixed target: one patched forward and
  one backward), for the defaults (``attention="auto"``: the model's sdpa here), the ``.lxt()`` presets,
  ``attention="sdpa"`` and ``attention="eager"``.
* ``shared_group_over_grad_sam``: Grad-SAM + raw attention + rollout + GAE in ONE ``explain()`` call relative to
  Grad-SAM alone.

``--arch llama`` runs the same on a random Llama-style decoder of MiniLM's size (6 layers, hidden 384, 6 query / 2
key-value heads, RMSNorm, gated MLP, RoPE), read at the last token. Run on a quiet machine:
``python bench/explainers.py [--repeats 5] [--device cpu] [--arch minilm|llama] [--methods grad_sam cp_lrp ...]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

from lightning_xai import explain
from lightning_xai.explainers import GradSAM
from lightning_xai.explainers.attention import RawAttention, Rollout
from lightning_xai.explainers.attention_shapley import AttentionShapley
from lightning_xai.explainers.gae import GAE
from lightning_xai.explainers.gradients import GradientXInput, IntegratedGradients
from lightning_xai.explainers.legrad import LeGrad
from lightning_xai.explainers.lrp import AttnLRP, ConservativeLRP, lrp
from lightning_xai.modalities import TextModality
from lightning_xai.recipes.bundled import minilm_path


def interleaved_seconds(calls: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list]:
    """Per call, its ``repeats`` times (seconds), the calls run round-robin after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_index > 0:  # round 0 warms up (allocator, lazy imports, registrations)
                times[name].append(time.perf_counter() - start)
    return times


def ratios(times: dict[str, list[float]], base: str = "plain") -> dict[str, dict[str, object]]:
    """Median time over the median base time, and the smallest/largest same-round ratio."""
    reference = statistics.median(times[base])
    result = {}
    for name, values in times.items():
        if name == base:
            continue
        per_round = [value / plain for value, plain in zip(values, times[base], strict=True)]
        result[name] = {
            "median": round(statistics.median(values) / reference, 3),
            "spread": [round(min(per_round), 3), round(max(per_round), 3)],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", choices=("minilm", "llama"), default="minilm")
    parser.add_argument("--methods", nargs="+", default=None, help="explainer names (default: all of the list)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.arch == "minilm":
        model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3)
    else:
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                             num_key_value_heads=2, vocab_size=32000, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                             num_labels=3)
        model = LlamaForSequenceClassification(config)
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.tokens), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    modality = TextModality(special_ids=[0, 100, 101, 102, 103], pad_id=0, replacement_id=103)
    with torch.no_grad():
        target = model(**inputs).logits.argmax(dim=-1)

    def plain() -> None:
        embeddings = model.get_input_embeddings()
        captured = []
        handle = embeddings.register_forward_hook(
            lambda m, a, o: captured.append(o.detach().requires_grad_()) or captured[-1]
        )
        try:
            logits = model(**inputs).logits
        finally:
            handle.remove()
        torch.autograd.grad(logits.max(dim=-1).values.sum(), captured[0])

    methods = {
        "grad_sam": GradSAM(),
        "raw_attention": RawAttention(),
        "rollout": Rollout(),
        "gae": GAE(),
        repr(LeGrad()): LeGrad(),
        repr(LeGrad(start_layer=-2)): LeGrad(start_layer=-2),
        "gradient_x_input": GradientXInput(),
        "integrated_gradients": IntegratedGradients(),
        repr(AttentionShapley()): AttentionShapley(),
        repr(AttentionShapley(game="max_mutual")): AttentionShapley(game="max_mutual"),
        "cp_lrp": ConservativeLRP(),
        "cp_lrp.lxt()": ConservativeLRP.lxt(),
        "cp_lrp(attention='sdpa')": ConservativeLRP(attention="sdpa"),
        "cp_lrp(attention='eager')": ConservativeLRP(attention="eager"),
        "attn_lrp": AttnLRP(),
        "attn_lrp.lxt()": AttnLRP.lxt(),
        "attn_lrp(attention='sdpa')": AttnLRP(attention="sdpa"),
        "attn_lrp(attention='eager')": AttnLRP(attention="eager"),
    }
    if args.methods is not None:
        methods = {key: m for key, m in methods.items() if m.name in args.methods}
    calls: dict[str, Callable[[], object]] = {"plain": plain}
    calls["shared_pass"] = lambda: explain(model, inputs, [], modality=modality)
    calls.update({key: lambda m=m: explain(model, inputs, [m], modality=modality) for key, m in methods.items()})
    passes: dict[str, Callable[[], object]] = {}
    for key, method in methods.items():
        if isinstance(method, (ConservativeLRP, AttnLRP)):
            settings = {k: v for k, v in vars(method).items() if not k.startswith("_")}
            passes[f"pass {key}"] = lambda s=settings, r=method.name: lrp(model, inputs, target, rule=r, **s)
    calls.update(passes)
    group = [GradSAM(), RawAttention(), Rollout(), GAE()]
    if "grad_sam" in methods:
        calls["attention group"] = lambda: explain(model, inputs, group, modality=modality)
    times = interleaved_seconds(calls, args.repeats, device)
    measured = ratios(times)
    report: dict[str, object] = {
        "arch": args.arch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "plain_forward_backward_s": round(statistics.median(times["plain"]), 5),
        "shared_pass": measured.pop("shared_pass"),
        "ratio_to_forward_backward": {key: measured[key]["median"] for key in methods},
        "spread": {key: measured[key]["spread"] for key in methods},
        "lrp_pass": {key.removeprefix("pass "): measured[key] for key in passes},
    }
    if "attention group" in measured:
        report["shared_group_over_grad_sam"] = round(measured["attention group"]["median"]
                                                     / measured["grad_sam"]["median"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
