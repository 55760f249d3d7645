"""Deletion AUC (Petsiuk et al., "RISE", BMVC 2018; for text: tokens replaced by the mask token).

Starting from the input, the content tokens are removed most-relevant-first (MoRF, default) or least-relevant-first
(LeRF) in ``steps`` equal fractions; the probability (or logit) of the explained class is recorded after each step
and the area under that curve over ``[0, 1]`` (trapezoid rule) is the score. MoRF: a faithful map makes the score
drop fast, **lower is better**; LeRF: **higher is better**.

Removal: by default text tokens are replaced by the modality's replacement token (the tokenizer's mask token;
attention mask kept; special tokens and padding never touched); image patches are set to the modality's baseline.
``removal=`` selects another way (see :class:`~lightning_xai.metrics.PerturbationMetric`). The number of tokens
removed at step ``k`` of a sample with ``n`` content tokens is ``ceil(k n / steps)``. Samples without content tokens
are skipped.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, reduce
from lightning_xai.metrics._perturbation import (
    ForwardFn,
    Score,
    curve_masks,
    removal_schedule,
    scores_of,
    trapezoid_auc,
)
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

Order = Literal["morf", "lerf"]


class _CurveMetric(PerturbationMetric):
    insertion = False

    def __init__(self, steps: int = 10, order: Order = "morf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if steps < 1:
            raise ValueError(f"{type(self).__name__}(steps=...) must be >= 1, got {steps}")
        if order not in ("morf", "lerf"):
            raise ValueError(f"{type(self).__name__}(order=...) must be 'morf' or 'lerf', got {order!r}")
        self.steps = steps
        self.order = order
        # deletion: MoRF lower is better; insertion: MoRF higher is better
        self.__dict__["higher_is_better"] = (order == "morf") == self.insertion  # torchmetrics forbids setattr

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        content = explanation.content_mask
        schedule = removal_schedule(content.sum(dim=1), self.steps)
        masks = curve_masks(explanation.relevance, content, schedule, descending=self.order == "morf",
                            keep=self.insertion)
        return torch.cat([torch.zeros_like(masks[:, :1]), masks], dim=1)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        auc = trapezoid_auc(scores_of(logits[:, 1:], explanation.target, self.score))
        return auc.masked_fill(~explanation.content_mask.any(dim=1), float("nan"))


class DeletionAUC(_CurveMetric):
    """Deletion AUC accumulated over batches (MoRF: lower is better); DDP-synced sums.

    Args:
        steps: removal steps per sample (``steps + 1`` forwards per sample).
        order: ``"morf"`` (most relevant first, default) or ``"lerf"``.
        score: ``"prob"`` (softmax probability, default) or ``"logit"`` of the explained class.
        removal: how tokens are removed (None: the modality's own way).
        max_batch_size: rows per perturbation forward (memory budget).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> metric = DeletionAUC(steps=2)
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> valid = torch.ones(1, 2, dtype=torch.bool)
        >>> exp = Explanation("m", torch.tensor([[1.0, 0.0]]), valid, ~valid, torch.tensor([0]))
        >>> metric.update(lambda x: torch.zeros(x["input_ids"].shape[0], 2), {"input_ids": torch.tensor([[5, 6]])},
        ...               exp, text)
        >>> float(metric.compute())
        0.5
    """

    #: Log-key name.
    name = "deletion_auc"
    higher_is_better = False


def deletion_auc(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    *,
    steps: int = 10,
    order: Order = "morf",
    score: Score = "prob",
    removal: str | float | None = None,
    max_batch_size: int = 256,
    reduction: Reduction = "mean",
) -> Tensor:
    """Deletion AUC of a batch of explanations (functional twin of :class:`DeletionAUC`).

    Args:
        forward: inputs -> logits, called under ``no_grad`` (put the model in eval mode first).
        inputs: the unperturbed batch.
        explanation: the maps to score (``explanation.target`` is the class whose score is tracked).
        modality: how tokens are removed.
        steps: removal steps; the curve has ``steps + 1`` points.
        order: ``"morf"`` or ``"lerf"``.
        score: ``"prob"`` or ``"logit"`` of the explained class.
        removal: how tokens are removed (None: the modality's own way).
        max_batch_size: rows per perturbation forward.
        reduction: ``"mean"`` over samples with content tokens, or ``"none"`` for ``[B]`` (NaN where skipped).

    Returns:
        Scalar mean AUC, or per-sample AUCs.

    Example:
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> inputs = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
        >>> def forward(x):  # the model only looks at token 7
        ...     has_7 = (x["input_ids"] == 7).any(dim=1).float()
        ...     return torch.stack([1 - has_7, has_7], dim=1) * 10
        >>> valid = torch.ones(1, 4, dtype=torch.bool)
        >>> oracle = Explanation("oracle", torch.tensor([[0.0, 0.0, 1.0, 0.0]]), valid, ~valid, torch.tensor([1]))
        >>> anti = Explanation("anti", torch.tensor([[1.0, 1.0, 0.0, 1.0]]), valid, ~valid, torch.tensor([1]))
        >>> round(float(deletion_auc(forward, inputs, oracle, text, steps=4)), 4)
        0.125
        >>> round(float(deletion_auc(forward, inputs, anti, text, steps=4)), 4)
        0.875
    """
    metric = DeletionAUC(steps=steps, order=order, score=score, removal=removal, max_batch_size=max_batch_size)
    return reduce(metric.values(forward, inputs, explanation, modality), reduction)
