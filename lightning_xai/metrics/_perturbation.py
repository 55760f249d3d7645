"""The batched perturbation engine shared by the perturbation metrics.

It builds every perturbed input of every step of every sample, runs them in length-sorted chunks under
``no_grad`` with the model's own (fast) attention backend, and returns score curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.modalities.base import Modality, select
from lightning_xai.types import Explanation, ModelInputs

#: A function from model inputs to logits ``[B, C]``.
ForwardFn = Callable[[ModelInputs], Tensor]
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


@torch.no_grad()
def perturbation_curves(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    *,
    steps: int,
    most_relevant_first: bool = True,
    score: Score = "prob",
    max_batch_size: int = 256,
) -> Tensor:
    """Score of the explained class after removing ``0, ceil(n/steps), ..., n`` content tokens in relevance order.

    All ``B * (steps + 1)`` perturbed inputs are built lazily per chunk; rows are sorted by length so a chunk is
    trimmed to its own longest row (padding waste stays small), and chunks hold at most ``max_batch_size`` rows.

    Args:
        forward: inputs -> logits; called under ``no_grad`` in whatever mode the caller set (eval).
        inputs: the unperturbed batch.
        explanation: relevance and token masks for the batch (its ``target`` is the scored class).
        modality: how tokens are removed.
        steps: number of removal steps (the curve has ``steps + 1`` points, the first one unperturbed).
        most_relevant_first: MoRF (deletion) order; False removes the least relevant first.
        score: ``"prob"`` (softmax probability) or ``"logit"``.
        max_batch_size: largest number of rows per forward.

    Returns:
        ``[B, steps + 1]`` float32 curves.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    content = explanation.content_mask
    ranks = relevance_ranks(explanation.relevance, content, descending=most_relevant_first)
    schedule = removal_schedule(content.sum(dim=1), steps)  # [B, S]
    num_rows, num_steps = schedule.shape
    sample_of = torch.arange(num_rows, device=ranks.device).repeat_interleave(num_steps)
    removed_count = schedule.reshape(-1)

    lengths = modality.lengths(inputs)
    order = (
        torch.argsort(lengths[sample_of].cpu(), stable=True) if lengths is not None else torch.arange(len(sample_of))
    )
    scores = torch.empty(len(sample_of), dtype=torch.float32, device=explanation.relevance.device)
    for start in range(0, len(order), max_batch_size):
        chunk = order[start : start + max_batch_size].to(ranks.device)
        samples = sample_of[chunk]
        chunk_inputs = select(inputs, samples)
        removed = ranks[samples] < removed_count[chunk][:, None]
        perturbed = modality.remove(chunk_inputs, removed)
        if lengths is not None:
            perturbed = modality.trim(perturbed, int(lengths[samples].max()))
        logits = forward(perturbed)
        scores[chunk] = score_of(logits, explanation.target[samples], score).to(scores.device)
    return scores.reshape(num_rows, num_steps)


def trapezoid_auc(curves: Tensor) -> Tensor:
    """Area under ``[B, S]`` curves sampled uniformly on ``[0, 1]`` (trapezoid rule).

    Example:
        >>> import torch
        >>> trapezoid_auc(torch.tensor([[1.0, 0.5, 0.0]])).tolist()
        [0.5]
    """
    intervals = curves.shape[1] - 1
    return (curves[:, 1:] + curves[:, :-1]).sum(dim=1) / (2 * intervals)
