"""Building blocks of the perturbation metrics: token ranks, removal schedules and masks, class scores, areas.

These are pure tensor functions; the metric files compose them into their ``_<metric>_masks`` and
``_<metric>_values`` functions, and :mod:`lightning_xai.metrics.engine` runs the masks through the model.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.types import Explanation

Score = Literal["prob", "logit"]


def relevance_ranks(relevance: Tensor, content_mask: Tensor, descending: bool = True) -> Tensor:
    """Rank of every content token (0 = first removed); non-content tokens get a rank past every content token.

    Ties are broken by position (stable sort), so equal relevance removes earlier tokens first.

    Example:
        >>> import torch
        >>> relevance_ranks(torch.tensor([[0.1, 0.9, 0.5, 7.0]]), torch.tensor([[True, True, True, False]])).tolist()
        [[2, 0, 1, 3]]
    """
    fill = -math.inf if descending else math.inf
    keyed = relevance.float().masked_fill(~content_mask, fill)
    order = torch.sort(keyed, dim=1, descending=descending, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


def removal_schedule(content_counts: Tensor, steps: int) -> Tensor:
    """Tokens removed at each step: ``ceil(k * n / steps)`` for ``k = 0..steps`` (``[B, steps + 1]``).

    Example:
        >>> import torch
        >>> removal_schedule(torch.tensor([5, 0]), 4).tolist()
        [[0, 2, 3, 4, 5], [0, 0, 0, 0, 0]]
    """
    k = torch.arange(steps + 1, device=content_counts.device)
    return torch.ceil(k[None, :] * content_counts[:, None] / steps - 1e-9).long()


def score_of(logits: Tensor, target: Tensor, score: Score) -> Tensor:
    """Probability (softmax) or logit of ``target`` per row, in float32."""
    logits = logits.float()
    if score == "prob":
        logits = logits.softmax(dim=-1)
    elif score != "logit":
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    return logits.gather(1, target[:, None]).squeeze(1)


def scores_of(logits: Tensor, target: Tensor, score: Score) -> Tensor:
    """``[B, R, C]`` logits -> ``[B, R]`` probability or logit of ``target[b]``."""
    b, r, c = logits.shape
    return score_of(logits.reshape(b * r, c), target.to(logits.device).repeat_interleave(r), score).reshape(b, r)


def curve_masks(
    relevance: Tensor, content: Tensor, counts: Tensor, *, descending: bool = True, keep: bool = False
) -> Tensor:
    """``[B, K, N]`` removal masks: the top ``counts[b, k]`` content tokens in relevance order.

    With ``keep=True`` those tokens are the ones kept (every other content token is removed): sufficiency and
    insertion. ``descending=False`` ranks least relevant first.

    Example:
        >>> import torch
        >>> content = torch.tensor([[False, True, True, True]])
        >>> curve_masks(torch.tensor([[9.0, 0.1, 0.7, 0.3]]), content, torch.tensor([[1, 2]])).int().tolist()
        [[[0, 0, 1, 0], [0, 0, 1, 1]]]
    """
    ranks = relevance_ranks(relevance, content, descending=descending)
    top = ranks[:, None, :] < counts[:, :, None]
    return (content[:, None, :] & ~top) if keep else (top & content[:, None, :])


def with_unperturbed(masks: Tensor) -> Tensor:
    """Prepend the all-False (unperturbed) row to ``[B, R, N]`` masks."""
    return torch.cat([torch.zeros_like(masks[:, :1]), masks], dim=1)


def skip_empty(values: Tensor, explanation: Explanation) -> Tensor:
    """``[B]`` values with NaN (skipped) for the samples that have no content token."""
    return values.masked_fill(~explanation.content_mask.to(values.device).any(dim=1), math.nan)


def trapezoid_auc(curves: Tensor) -> Tensor:
    """Area under ``[B, S]`` curves sampled uniformly on ``[0, 1]`` (trapezoid rule).

    Example:
        >>> import torch
        >>> trapezoid_auc(torch.tensor([[1.0, 0.5, 0.0]])).tolist()
        [0.5]
    """
    intervals = curves.shape[1] - 1
    return (curves[:, 1:] + curves[:, :-1]).sum(dim=1) / (2 * intervals)
