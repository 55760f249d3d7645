"""Deletion AUC (Petsiuk et al., "RISE", BMVC 2018; for text: tokens replaced by the mask token).

Starting from the input, the content tokens are removed most-relevant-first in ``steps`` equal fractions; the
probability (or logit) of the explained class is recorded after each step and the area under that curve over
``[0, 1]`` (trapezoid rule) is the score. A faithful map makes the score drop fast: **lower is better**.

Removal: text tokens are replaced by the tokenizer's mask token (attention mask kept; special tokens and padding
never touched); image patches are set to the modality's baseline. The number of tokens removed at step ``k`` of a
sample with ``n`` content tokens is ``ceil(k n / steps)``. Samples without content tokens are skipped.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_xai.metrics._perturbation import ForwardFn, Score, perturbation_curves, trapezoid_auc
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


def deletion_auc(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    *,
    steps: int = 10,
    score: Score = "prob",
    max_batch_size: int = 256,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Deletion AUC of a batch of explanations (functional twin of :class:`DeletionAUC`).

    Args:
        forward: inputs -> logits, called under ``no_grad`` (put the model in eval mode first).
        inputs: the unperturbed batch.
        explanation: the maps to score (``explanation.target`` is the class whose score is tracked).
        modality: how tokens are removed.
        steps: removal steps; the curve has ``steps + 1`` points.
        score: ``"prob"`` or ``"logit"`` of the explained class.
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
    curves = perturbation_curves(
        forward, inputs, explanation, modality, steps=steps, score=score, max_batch_size=max_batch_size
    )
    auc = trapezoid_auc(curves)
    has_content = explanation.content_mask.any(dim=1)
    auc = auc.masked_fill(~has_content, float("nan"))
    if reduction == "none":
        return auc
    return auc[has_content].mean() if has_content.any() else torch.tensor(float("nan"), device=auc.device)


class DeletionAUC(Metric):
    """Deletion AUC accumulated over batches (lower is better); DDP-synced sums.

    Args:
        steps: removal steps per sample (``steps + 1`` forwards per sample).
        score: ``"prob"`` (softmax probability, default) or ``"logit"`` of the explained class.
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
    is_differentiable = False
    full_state_update = False

    auc_sum: Tensor
    count: Tensor

    def __init__(self, steps: int = 10, score: Score = "prob", max_batch_size: int = 256, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if steps < 1:
            raise ValueError(f"DeletionAUC(steps=...) must be >= 1, got {steps}")
        if score not in ("prob", "logit"):
            raise ValueError(f"DeletionAUC(score=...) must be 'prob' or 'logit', got {score!r}")
        if max_batch_size < 1:
            raise ValueError(f"DeletionAUC(max_batch_size=...) must be >= 1, got {max_batch_size}")
        self.steps = steps
        self.score = score
        self.max_batch_size = max_batch_size
        self.add_state("auc_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality) -> None:
        """Score one batch of explanations."""
        auc = deletion_auc(
            forward,
            inputs,
            explanation,
            modality,
            steps=self.steps,
            score=self.score,
            max_batch_size=self.max_batch_size,
            reduction="none",
        )
        kept = ~torch.isnan(auc)
        self.auc_sum += auc[kept].double().sum().to(self.auc_sum.device)
        self.count += kept.sum().to(self.count.device)

    def compute(self) -> Tensor:
        """Mean AUC over every scored sample (NaN when none was scored)."""
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.auc_sum / self.count).float()
