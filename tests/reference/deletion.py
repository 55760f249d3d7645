"""Deletion AUC, one sample and one step at a time (slow and obvious)."""

import math

import torch


def deletion_auc_reference(model_fn, ids: list[int], content: list[bool], relevance: list[float], target: int,
                           replacement_id: int, steps: int, extra: dict | None = None) -> float:
    """One text sample without padding. model_fn(dict) -> logits [1, C]."""
    positions = [i for i, c in enumerate(content) if c]
    # most relevant first; ties -> earlier position first
    order = sorted(positions, key=lambda i: (-relevance[i], i))
    n = len(positions)
    ys = []
    for k in range(steps + 1):
        m = math.ceil(k * n / steps - 1e-9)
        removed = set(order[:m])
        perturbed = [replacement_id if i in removed else t for i, t in enumerate(ids)]
        inputs = {"input_ids": torch.tensor([perturbed])}
        if extra:
            inputs.update(extra)
        with torch.no_grad():
            p = torch.softmax(model_fn(inputs).float(), dim=-1)[0, target].item()
        ys.append(p)
    area = 0.0
    for k in range(steps):
        area += (ys[k] + ys[k + 1]) / 2 / steps
    return area
