"""Slow per-sample references for the perturbation metrics: one sample, one perturbation, explicit loops."""

import math

import torch


def retokenizing(tokenizer):
    """A ``mode`` for :func:`_run`: ferret's perturbation, one text at a time (delete the removed positions, decode
    the content between [CLS] and [SEP] to text, tokenise that text again)."""

    def build(ids, removed):
        content = [t for i, t in enumerate(ids) if 0 < i < len(ids) - 1 and i not in removed]
        text = tokenizer.decode(content, skip_special_tokens=False)
        return dict(tokenizer(text, return_tensors="pt"))

    return build


def _run(model_fn, ids, target, removed, replacement_id, mode="replace"):
    """Logits of one perturbed sample (no padding). mode: replace | delete | attention | retokenizing(tokenizer)."""
    if callable(mode):
        inputs = mode(ids, removed)
    elif mode == "delete":
        kept = [t for i, t in enumerate(ids) if i not in removed]
        inputs = {"input_ids": torch.tensor([kept]), "attention_mask": torch.ones(1, len(kept), dtype=torch.long)}
    elif mode == "attention":
        inputs = {"input_ids": torch.tensor([ids]),
                  "attention_mask": torch.tensor([[0 if i in removed else 1 for i in range(len(ids))]])}
    else:
        perturbed = [replacement_id if i in removed else t for i, t in enumerate(ids)]
        inputs = {"input_ids": torch.tensor([perturbed]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    with torch.no_grad():
        return model_fn(inputs).float()[0]


def _prob(model_fn, ids, target, removed, replacement_id, mode="replace"):
    return torch.softmax(_run(model_fn, ids, target, removed, replacement_id, mode), -1)[target].item()


def _order(content, relevance, descending=True, later_first=False):
    positions = [i for i, c in enumerate(content) if c]
    sign = -1 if descending else 1
    tie = (lambda i: -i) if later_first else (lambda i: i)
    return sorted(positions, key=lambda i: (sign * relevance[i], tie(i)))


def _trapz(ys):
    return sum((ys[k] + ys[k + 1]) / 2 for k in range(len(ys) - 1)) / (len(ys) - 1)


def curve_reference(model_fn, ids, content, relevance, target, replacement_id, steps, order="morf", insertion=False,
                    mode="replace"):
    ranked = _order(content, relevance, descending=order == "morf")
    n = len(ranked)
    ys = []
    for k in range(steps + 1):
        m = math.ceil(k * n / steps - 1e-9)
        removed = set(ranked[m:]) if insertion else set(ranked[:m])
        ys.append(_prob(model_fn, ids, target, removed, replacement_id, mode))
    return _trapz(ys)


def aopc_reference(model_fn, ids, content, relevance, target, replacement_id, convention, sufficiency=False,
                   mode="replace"):
    p0 = _prob(model_fn, ids, target, set(), replacement_id, mode)
    n = sum(content)
    deltas = []
    if convention == "ferret":
        import numpy as np

        ranked = _order(content, relevance, later_first=True)
        last = None
        for f in np.arange(0.1, 1.1, 0.1):
            k = int(f * n)
            if k == 0:
                continue
            top = [i for i in ranked[:k] if relevance[i] > 0]
            if not top:  # ferret's top-k returns None for an empty rationale: the threshold is skipped
                continue
            if last is not None and set(top) == last:
                continue
            last = set(top)
            removed = set(ranked) - set(top) if sufficiency else set(top)
            deltas.append(p0 - _prob(model_fn, ids, target, removed, replacement_id, mode))
        if not deltas:  # no rationale at any threshold: ferret returns 1 (sufficiency) and 0 (comprehensiveness)
            return 1.0 if sufficiency else 0.0
        return sum(deltas) / len(deltas)
    # ERASER's baseline code ranks with numpy's argsort(attn)[-k:]: among equal scores the later position first
    ranked = _order(content, relevance, later_first=convention == "eraser")
    fractions = (0.01, 0.05, 0.1, 0.2, 0.5) if convention == "eraser" else (0.0, 0.1, 0.2, 0.5)
    for f in fractions:
        k = math.ceil(f * n - 1e-9)
        removed = set(ranked[k:]) if sufficiency else set(ranked[:k])
        deltas.append(p0 - _prob(model_fn, ids, target, removed, replacement_id, mode))
    return sum(deltas) / (len(fractions) + (1 if convention == "eggen" else 0))


def log_odds_reference(model_fn, ids, content, relevance, target, replacement_id, fraction=0.2):
    ranked = _order(content, relevance)
    k = math.ceil(fraction * len(ranked) - 1e-9)
    p0 = _prob(model_fn, ids, target, set(), replacement_id)
    return math.log(_prob(model_fn, ids, target, set(ranked[:k]), replacement_id)) - math.log(p0)


def ali_reference(model_fn, ids, content, relevance, target, unk_id, kind, steps=10):
    n = sum(content)
    if kind == "auac":
        ranked = _order(content, relevance)
    else:
        ranked = _order(content, [abs(r) for r in relevance], descending=False)
    base = _run(model_fn, ids, target, set(), unk_id)
    ys = []
    for k in range(steps + 1):
        m = math.ceil(k * n / steps - 1e-9)
        removed = set(ranked[m:]) if kind == "auac" else set(ranked[:m])
        logits = _run(model_fn, ids, target, removed, unk_id)
        ys.append(((base - logits) ** 2).sum().item() if kind == "au_mse" else torch.softmax(logits, -1)[target].item())
    return _trapz(ys)


def kendall_tau_b(x, y):
    n = len(x)
    s = nx = ny = 0
    for i in range(n):
        for j in range(i + 1, n):
            a = (x[i] > x[j]) - (x[i] < x[j])
            b = (y[i] > y[j]) - (y[i] < y[j])
            s += a * b
            nx += a != 0
            ny += b != 0
    return s / math.sqrt(nx * ny) if nx and ny else float("nan")


def loo_tau_reference(model_fn, ids, content, relevance, target, replacement_id, mode="delete"):
    p0 = _prob(model_fn, ids, target, set(), replacement_id, mode)
    positions = [i for i, c in enumerate(content) if c]
    loo = [p0 - _prob(model_fn, ids, target, {i}, replacement_id, mode) for i in positions]
    return kendall_tau_b(loo, [relevance[i] for i in positions])


def spearman_reference(a, b):
    def ranks(v):
        return [sum(u < x for u in v) + (sum(u == x for u in v) + 1) / 2 for x in v]

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((p - ma) * (q - mb) for p, q in zip(ra, rb, strict=False))
    den = math.sqrt(sum((p - ma) ** 2 for p in ra) * sum((q - mb) ** 2 for q in rb))
    return cov / den if den > 1e-12 else float("nan")
