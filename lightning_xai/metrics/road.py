"""ROAD (Rong et al., ICML 2022): remove-and-debias with noisy linear imputation, for images.

The top (MoRF) or bottom (LeRF) ``ceil(p · n)`` patches for ``p`` in ``fractions`` (default 10%, 20%, ..., 90%)
are replaced by ROAD's noisy linear imputation (``removal="road"``: each removed pixel is the 1/6-direct,
1/12-diagonal weighted mean of its neighbours, solved jointly, plus Gaussian noise σ = 0.01; see
:func:`lightning_xai.modalities.vision.noisy_linear_impute`). The value is the mean score of the explained class
over the fractions (the normalised area of ROAD's curve). MoRF: **lower is better**; LeRF: **higher is better**.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, reduce, with_unperturbed
from lightning_xai.metrics._perturbation import ForwardFn, curve_masks, scores_of
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class ROAD(PerturbationMetric):
    """ROAD MoRF/LeRF mean score over the fractions.

    Args:
        order: ``"morf"`` (lower is better, default) or ``"lerf"`` (higher is better).
        fractions: shares of patches removed.
        kwargs: ``score``, ``removal`` (default ``"road"``), ``max_batch_size``, torchmetrics arguments.
    """

    #: Log-key name.
    name = "road"
    higher_is_better = False

    def __init__(self, order: Literal["morf", "lerf"] = "morf", fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 **kwargs: Any) -> None:
        kwargs.setdefault("removal", "road")
        super().__init__(**kwargs)
        if order not in ("morf", "lerf"):
            raise ValueError(f"ROAD(order=...) must be 'morf' or 'lerf', got {order!r}")
        self.order = order
        self.fractions = tuple(float(f) for f in fractions)
        self.__dict__["higher_is_better"] = order == "lerf"

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        content = explanation.content_mask
        fractions = torch.tensor(self.fractions, dtype=torch.float64, device=content.device)
        counts = torch.ceil(fractions[None] * content.sum(dim=1, keepdim=True) - 1e-9).long()
        return with_unperturbed(curve_masks(explanation.relevance, content, counts, descending=self.order == "morf"))

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        value = scores_of(logits[:, 1:], explanation.target, self.score).mean(dim=1)
        return value.masked_fill(~explanation.content_mask.any(dim=1), float("nan"))


def road(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
         order: Literal["morf", "lerf"] = "morf", fractions: Sequence[float] = DEFAULT_FRACTIONS,
         score: str = "prob", removal: str | float = "road", max_batch_size: int = 256,
         reduction: Reduction = "mean") -> Tensor:
    """ROAD of a batch (functional twin of :class:`ROAD`)."""
    metric = ROAD(order=order, fractions=fractions, score=score, removal=removal,  # type: ignore[arg-type]
                  max_batch_size=max_batch_size)
    return reduce(metric.values(forward, inputs, explanation, modality), reduction)
