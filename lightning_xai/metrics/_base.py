"""Base class of the perturbation metrics and the suite runner that shares forwards across metrics and methods.

A perturbation metric is two pure functions around the engine (:func:`forward_removals`):
``removal_masks(explanation) -> [B, R, N]`` (row 0 is always the unperturbed input) and
``per_sample(logits [B, R, C], explanation) -> [B]`` (NaN where a sample is skipped). :func:`evaluate_suite` runs
any number of metrics on any number of methods' maps of one batch with one deduplicated engine pass per removal
mode, so forwards shared by metrics and methods (unperturbed input, everything removed, equal masks) run once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_xai.metrics._perturbation import (
    DEFAULT_MAX_TOKENS,
    ForwardFn,
    Score,
    forward_removals,
    resolve_modality,
)
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

Reduction = Literal["mean", "none"]


def nan_mean(values: Tensor) -> Tensor:
    """Mean over the non-NaN entries (NaN when there is none)."""
    kept = ~torch.isnan(values)
    return values[kept].mean() if kept.any() else torch.tensor(float("nan"), device=values.device)


class SampleMeanMetric(Metric):
    """Mean of per-sample values over an epoch, DDP-synced through sum states (NaN samples skipped)."""

    name = "sample_mean"
    is_differentiable = False
    full_state_update = False

    value_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("value_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update_values(self, values: Tensor) -> None:
        """Accumulate per-sample values (NaN = skipped)."""
        kept = ~torch.isnan(values)
        self.value_sum += values[kept].double().sum().to(self.value_sum.device)
        self.count += kept.sum().to(self.count.device)

    def compute(self) -> Tensor:
        """Mean over every scored sample (NaN when none was scored)."""
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.value_sum / self.count).float()


class PerturbationMetric(SampleMeanMetric):
    """A faithfulness metric computed from perturbed forwards (see the module docstring).

    Args:
        score: ``"prob"`` or ``"logit"`` of the explained class, where the metric uses one.
        removal: how tokens are removed, overriding the modality's own setting (text: ``"replace"``, ``"mask"``,
            ``"unk"``, ``"pad"``, ``"attention"``, ``"delete"``, ``"zero_embedding"``; vision: ``"zero"``,
            ``"mean"``, ``"blur"``, ``"road"`` or a number); None keeps the modality's.
        max_batch_size: rows per perturbation forward (memory budget).
        max_tokens: rows x tokens per perturbation forward for text (memory budget; None: rows only).
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    def __init__(
        self,
        score: Score = "prob",
        removal: str | float | None = None,
        max_batch_size: int = 256,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if score not in ("prob", "logit"):
            raise ValueError(f"{type(self).__name__}(score=...) must be 'prob' or 'logit', got {score!r}")
        if max_batch_size < 1:
            raise ValueError(f"{type(self).__name__}(max_batch_size=...) must be >= 1, got {max_batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"{type(self).__name__}(max_tokens=...) must be >= 1 or None, got {max_tokens}")
        self.score = score
        self.removal = removal
        self.max_batch_size = max_batch_size
        self.max_tokens = max_tokens

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """``[B, R, N]`` bool masks; row 0 must be the unperturbed input (all False)."""
        raise NotImplementedError

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """``[B]`` values from the ``[B, R, C]`` logits of :meth:`removal_masks` (NaN = skipped)."""
        raise NotImplementedError

    def values(self, forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality) -> Tensor:
        """Per-sample values of one batch (NaN where skipped)."""
        return evaluate_suite(forward, inputs, {explanation.method: explanation}, modality, [self])[0][
            explanation.method
        ]

    def update(
        self,
        forward: ForwardFn,
        inputs: ModelInputs,
        explanation: Explanation,
        modality: Modality,
        values: Tensor | None = None,
    ) -> None:
        """Score one batch of explanations.

        ``values``: this metric's ``[B]`` per-sample values of the batch when already computed (by
        :func:`evaluate_suite`, which shares forwards across metrics and methods); the engine is then skipped.
        """
        self.update_values(self.values(forward, inputs, explanation, modality) if values is None else values)


def reduce(values: Tensor, reduction: Reduction) -> Tensor:
    """``"none"``: ``[B]`` as is; ``"mean"``: mean over non-NaN samples."""
    if reduction == "none":
        return values
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return nan_mean(values)


def with_unperturbed(masks: Tensor) -> Tensor:
    """Prepend the all-False (unperturbed) row to ``[B, R, N]`` masks."""
    return torch.cat([torch.zeros_like(masks[:, :1]), masks], dim=1)


@torch.no_grad()
def evaluate_suite(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanations: Mapping[str, Explanation],
    modality: Modality,
    metrics: Sequence[PerturbationMetric],
    *,
    max_batch_size: int | None = None,
    max_tokens: int | None = None,
    stats: list[dict[str, int]] | None = None,
) -> list[dict[str, Tensor]]:
    """Every metric on every method's maps of one batch, with one shared, deduplicated engine pass per removal.

    Args:
        forward: inputs -> logits (an :class:`~lightning_xai.metrics.EmbeddingForward` for zero-embedding removal).
        inputs: the unperturbed batch.
        explanations: ``{method: Explanation}`` of the same batch.
        modality: token bookkeeping; each metric's ``removal`` picks a variant of it.
        metrics: the metrics to compute (their states are not touched).
        max_batch_size: rows per forward (default: the smallest of the metrics').
        max_tokens: rows x tokens per forward for text (default: the smallest of the metrics'; None if none has one).
        stats: when given, one engine statistics dict per removal group is appended.

    Returns:
        ``out[i][method]``: ``[B]`` values of ``metrics[i]`` (NaN where skipped).
    """
    budget = max_batch_size or min((m.max_batch_size for m in metrics), default=256)
    if max_tokens is None:
        max_tokens = min((m.max_tokens for m in metrics if m.max_tokens is not None), default=None)
    groups: dict[Any, list[int]] = {}
    for i, metric in enumerate(metrics):
        groups.setdefault(metric.removal, []).append(i)
    out: list[dict[str, Tensor]] = [{} for _ in metrics]
    for removal, members in groups.items():
        parts, spans = [], []
        offset = 0
        for i in members:
            for name, explanation in explanations.items():
                masks = metrics[i].removal_masks(explanation)
                parts.append(masks)
                spans.append((i, name, offset, offset + masks.shape[1]))
                offset += masks.shape[1]
        group_stats: dict[str, int] = {}
        logits = forward_removals(
            forward, inputs, resolve_modality(modality, removal), torch.cat(parts, dim=1), max_batch_size=budget,
            max_tokens=max_tokens, stats=group_stats,
        )
        if stats is not None:
            stats.append(group_stats)
        for i, name, start, stop in spans:
            explanation = explanations[name]
            values = metrics[i].per_sample(logits[:, start:stop].to(explanation.relevance.device), explanation)
            out[i][name] = values
    return out
