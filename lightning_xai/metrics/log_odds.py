"""Log-odds (Shrikumar et al. 2017; Chen et al. 2020 for text).

``LOR = log p(ŷ | x̃) − log p(ŷ | x)`` where ``x̃`` is ``x`` with the top ``ceil(fraction · n)`` content tokens
removed (default fraction 20%; removal: the modality's own, text default replacement by ``[MASK]``) and ``p`` the
softmax probability of the explained class (computed with ``log_softmax``). **Lower (more negative) is better**;
range ``(-inf, +inf)``. Samples without content tokens are skipped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, reduce, with_unperturbed
from lightning_xai.metrics._perturbation import ForwardFn, curve_masks
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


class LogOdds(PerturbationMetric):
    """Log-odds after removing the top ``fraction`` of content tokens (lower is better).

    Args:
        fraction: share of content tokens removed (``ceil``).
        kwargs: ``removal``, ``max_batch_size`` and :class:`torchmetrics.Metric` arguments.
    """

    #: Log-key name.
    name = "log_odds"
    higher_is_better = False

    def __init__(self, fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < fraction <= 1:
            raise ValueError(f"LogOdds(fraction=...) must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        content = explanation.content_mask
        counts = torch.ceil(content.sum(dim=1, keepdim=True) * self.fraction - 1e-9).long()
        return with_unperturbed(curve_masks(explanation.relevance, content, counts))

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        logp = logits.float().log_softmax(dim=-1).gather(2, explanation.target.to(logits.device)[:, None, None]
                                                          .expand(-1, logits.shape[1], 1))[..., 0]
        return (logp[:, 1] - logp[:, 0]).masked_fill(~explanation.content_mask.any(dim=1), math.nan)


def log_odds(
    forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
    fraction: float = 0.2, removal: str | float | None = None, max_batch_size: int = 256,
    reduction: Reduction = "mean",
) -> Tensor:
    """Log-odds of a batch (functional twin of :class:`LogOdds`)."""
    metric = LogOdds(fraction=fraction, removal=removal, max_batch_size=max_batch_size)
    return reduce(metric.values(forward, inputs, explanation, modality), reduction)
