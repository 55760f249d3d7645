"""AttnLRP's faithfulness: area between the LeRF and MoRF deletion curves (Achtibat et al., ICML 2024, issue #40).

``ΔA = AUC_LeRF − AUC_MoRF`` of two deletion curves (``steps`` equal fractions, ``ceil(k n / steps)`` tokens removed
at step ``k``, trapezoid over ``[0, 1]``). AttnLRP records the **logit** (default here) and removes tokens by setting
their input embeddings to zero (``removal="zero_embedding"``, needs an
:class:`~lightning_xai.metrics.EmbeddingForward`); the default ``removal=None`` uses the modality's own removal.
**Higher is better**; range ``[-(max-min), max-min]`` of the score. The two curves share their first (unperturbed)
and last (everything removed) forwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, check_arg, check_engine_args, engine_values
from lightning_xai.metrics._perturbation import (
    Score,
    curve_masks,
    removal_schedule,
    scores_of,
    skip_empty,
    trapezoid_auc,
)
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


def _area_between_curves_masks(explanation: Explanation, steps: int) -> Tensor:
    """``[B, 2 (steps + 1), N]`` removal masks: the MoRF curve (its row 0 is the unperturbed input), then LeRF."""
    content = explanation.content_mask
    schedule = removal_schedule(content.sum(dim=1), steps)
    morf = curve_masks(explanation.relevance, content, schedule, descending=True)
    lerf = curve_masks(explanation.relevance, content, schedule, descending=False)
    return torch.cat([morf, lerf], dim=1)


def _area_between_curves_values(logits: Tensor, explanation: Explanation, steps: int, score: Score) -> Tensor:
    """``[B]`` ``AUC_LeRF − AUC_MoRF`` from the logits of :func:`_area_between_curves_masks`."""
    scores = scores_of(logits, explanation.target, score)
    points = steps + 1
    return skip_empty(trapezoid_auc(scores[:, points:]) - trapezoid_auc(scores[:, :points]), explanation)


class AreaBetweenCurves(PerturbationMetric):
    """ΔA = AUC_LeRF − AUC_MoRF (higher is better).

    Args:
        steps: removal steps of each curve.
        score: ``"logit"`` (default, as AttnLRP) or ``"prob"``.
        kwargs: ``removal``, ``max_batch_size`` and :class:`torchmetrics.Metric` arguments.
    """

    #: Log-key name.
    name = "area_between_curves"
    higher_is_better = True

    def __init__(self, steps: int = 10, score: Score = "logit", **kwargs: Any) -> None:
        super().__init__(score=score, **kwargs)
        check_arg("AreaBetweenCurves", "steps", steps, steps >= 1, ">= 1")
        self.steps = steps

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _area_between_curves_masks(explanation, self.steps)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _area_between_curves_values(logits, explanation, self.steps, self.score)


def area_between_curves(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    *,
    steps: int = 10,
    score: Score = "logit",
    removal: str | float | None = None,
    max_batch_size: int = 256,
    reduction: Reduction = "mean",
) -> Tensor:
    """ΔA of a batch (functional twin of :class:`AreaBetweenCurves`)."""
    check_arg("area_between_curves", "steps", steps, steps >= 1, ">= 1")
    check_engine_args("area_between_curves", score, max_batch_size)
    return engine_values(forward, inputs, explanation, modality, _area_between_curves_masks(explanation, steps),
                         lambda logits: _area_between_curves_values(logits, explanation, steps, score),
                         removal=removal, max_batch_size=max_batch_size, reduction=reduction)
