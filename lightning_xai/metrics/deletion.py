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

from typing import Any, ClassVar, Literal

from torch import Tensor

from lightning_xai.metrics._base import (
    PerturbationMetric,
    Reduction,
    check_arg,
    check_choice,
    check_engine_args,
    engine_values,
)
from lightning_xai.metrics._perturbation import (
    Score,
    curve_masks,
    removal_schedule,
    scores_of,
    skip_empty,
    trapezoid_auc,
    with_unperturbed,
)
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

Order = Literal["morf", "lerf"]


def _check_curve_args(owner: str, steps: int, order: Order) -> None:
    check_arg(owner, "steps", steps, steps >= 1, ">= 1")
    check_choice(owner, "order", order, ("morf", "lerf"))


def _deletion_auc_masks(explanation: Explanation, steps: int, order: Order, insertion: bool = False) -> Tensor:
    """``[B, steps + 2, N]`` removal masks: row 0 unperturbed, then the curve's ``steps + 1`` points.

    Deletion removes the top ``ceil(k n / steps)`` content tokens at point ``k``; insertion keeps them (every other
    content token removed), so its point 0 is the all-removed canvas.
    """
    content = explanation.content_mask
    schedule = removal_schedule(content.sum(dim=1), steps)
    return with_unperturbed(curve_masks(explanation.relevance, content, schedule, descending=order == "morf",
                                        keep=insertion))


def _deletion_auc_values(logits: Tensor, explanation: Explanation, score: Score) -> Tensor:
    """``[B]`` trapezoid areas from the ``[B, steps + 2, C]`` logits of :func:`_deletion_auc_masks`."""
    return skip_empty(trapezoid_auc(scores_of(logits[:, 1:], explanation.target, score)), explanation)


def _curve_auc(
    owner: str,
    insertion: bool,
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    steps: int,
    order: Order,
    score: Score,
    removal: str | float | None,
    max_batch_size: int,
    reduction: Reduction,
) -> Tensor:
    """The deletion and insertion functionals (they differ only in ``insertion``)."""
    _check_curve_args(owner, steps, order)
    check_engine_args(owner, score, max_batch_size)
    return engine_values(
        forward, inputs, explanation, modality, _deletion_auc_masks(explanation, steps, order, insertion),
        lambda logits: _deletion_auc_values(logits, explanation, score),
        removal=removal, max_batch_size=max_batch_size, reduction=reduction,
    )


class _CurveMetric(PerturbationMetric):
    insertion: ClassVar[bool] = False

    def __init__(self, steps: int = 10, order: Order = "morf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_curve_args(type(self).__name__, steps, order)
        self.steps = steps
        self.order = order

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """Deletion: MoRF lower is better, LeRF higher; insertion: the reverse."""
        return (self.order == "morf") == self.insertion

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _deletion_auc_masks(explanation, self.steps, self.order, self.insertion)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _deletion_auc_values(logits, explanation, self.score)


class DeletionAUC(_CurveMetric):
    """Deletion AUC accumulated over batches (MoRF: lower is better); DDP-synced sums.

    ``update(explanation, context)`` reads ``context.forward``, ``context.inputs`` and ``context.modality`` (or only
    ``context.values``, see :class:`~lightning_xai.metrics.PerturbationMetric`).

    Args:
        steps: removal steps per sample (``steps + 1`` forwards per sample).
        order: ``"morf"`` (most relevant first, default) or ``"lerf"``.
        score: ``"prob"`` (softmax probability, default) or ``"logit"`` of the explained class.
        removal: how tokens are removed (None: the modality's own way).
        max_batch_size: rows per perturbation forward (memory budget).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_xai.metrics import ScoringContext
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> metric = DeletionAUC(steps=2)
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> valid = torch.ones(1, 2, dtype=torch.bool)
        >>> exp = Explanation("m", torch.tensor([[1.0, 0.0]]), valid, ~valid, torch.tensor([0]))
        >>> forward = lambda x: torch.zeros(x["input_ids"].shape[0], 2)
        >>> metric.update(exp, ScoringContext(forward, {"input_ids": torch.tensor([[5, 6]])}, text))
        >>> float(metric.compute()), metric.higher_is_better, DeletionAUC(order="lerf").higher_is_better
        (0.5, False, True)
    """

    #: Log-key name.
    name = "deletion_auc"


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
    return _curve_auc("deletion_auc", False, forward, inputs, explanation, modality, steps, order, score, removal,
                      max_batch_size, reduction)
