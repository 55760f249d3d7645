"""Cost of each explainer relative to one plain forward+backward, on the bundled MiniLM (batch 32 x 64 tokens).

Prints JSON: per method the median (of 5) time of ``explain(model, batch, [method])`` divided by the median time of
one plain forward + ``torch.autograd.grad`` of the summed arg-max logits w.r.t. the input embeddings, and the
shared attention-gradient group (Grad-SAM + raw attention + rollout + GAE in ONE ``explain()`` call) relative to
Grad-SAM alone. ``--arch llama`` runs the same on a random Llama-style decoder of MiniLM's size (6 layers, hidden
384, 6 query / 2 key-value heads, RMSNorm, gated MLP, RoPE), read at the last token. Run on a quiet machine:
``python bench/explainers.py [--repeats 5] [--device cpu] [--arch minilm|llama] [--methods grad_sam legrad ...]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

from lightning_xai import explain
from lightning_xai.explainers import GradSAM
from lightning_xai.explainers.attention import RawAttention, Rollout
from lightning_xai.explainers.attention_shapley import AttentionShapley
from lightning_xai.explainers.gae import GAE
from lightning_xai.explainers.gradients import GradientXInput, IntegratedGradients
from lightning_xai.explainers.legrad import LeGrad
from lightning_xai.explainers.lrp import AttnLRP, ConservativeLRP
from lightning_xai.modalities import TextModality
from lightning_xai.recipes.bundled import minilm_path


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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

    base = _median_seconds(plain, args.repeats, device)
    methods = [
        GradSAM(),
        RawAttention(),
        Rollout(),
        GAE(),
        LeGrad(),
        LeGrad(start_layer=-2),
        GradientXInput(),
        IntegratedGradients(),
        AttentionShapley(),
        AttentionShapley(game="max_mutual"),
        ConservativeLRP(),
        AttnLRP(),
    ]
    if args.methods is not None:
        methods = [m for m in methods if m.name in args.methods]
    results: dict[str, float] = {}
    for method in methods:
        key = method.name if not isinstance(method, (LeGrad, AttentionShapley)) else repr(method)
        seconds = _median_seconds(lambda m=method: explain(model, inputs, [m], modality=modality), args.repeats, device)
        results[key] = round(seconds / base, 3)
    group = [GradSAM(), RawAttention(), Rollout(), GAE()]
    grad_sam = _median_seconds(lambda: explain(model, inputs, [GradSAM()], modality=modality), args.repeats, device)
    shared = _median_seconds(lambda: explain(model, inputs, group, modality=modality), args.repeats, device)
    report = {
        "arch": args.arch,
        "device": str(device),
        "batch": args.batch,
        "tokens": args.tokens,
        "plain_forward_backward_s": round(base, 5),
        "ratio_to_forward_backward": results,
        "shared_group_over_grad_sam": round(shared / grad_sam, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
