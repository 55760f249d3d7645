"""ROAD (Rong et al., ICML 2022): remove-and-debias with noisy linear imputation, for images.

The top (MoRF) or bottom (LeRF) ``ceil(p · n)`` patches for ``p`` in ``fractions`` (default 10%, 20%, ..., 90%)
are replaced by ROAD's noisy linear imputation (``removal="road"``: each removed pixel is the 1/6-direct,
1/12-diagonal weighted mean of its neighbours, solved jointly, plus Gaussian noise σ = 0.01; see
:func:`lightning_xai.modalities.vision.noisy_linear_impute`). The value is the mean score of the explained class
over the fractions (the normalised area of ROAD's curve). MoRF: **lower is better**; LeRF: **higher is better**.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, check_choice, check_engine_args, engine_values
from lightning_xai.metrics._perturbation import Score, curve_masks, scores_of, skip_empty, with_unperturbed
from lightning_xai.metrics.deletion import Order
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _road_masks(explanation: Explanation, fractions: Sequence[float], order: Order) -> Tensor:
    """``[B, F + 1, N]`` removal masks: row 0 unperturbed, then one per fraction ``f``.

    Row ``i + 1`` removes the top (MoRF) or bottom (LeRF) ``ceil(f_i · n)`` patches.
    """
    content = explanation.content_mask
    shares = torch.tensor(tuple(fractions), dtype=torch.float64, device=content.device)
    counts = torch.ceil(shares[None] * content.sum(dim=1, keepdim=True) - 1e-9).long()
    return with_unperturbed(curve_masks(explanation.relevance, content, counts, descending=order == "morf"))


def _road_values(logits: Tensor, explanation: Explanation, score: Score) -> Tensor:
    """``[B]`` mean score over the fractions, from the logits of :func:`_road_masks`."""
    return skip_empty(scores_of(logits[:, 1:], explanation.target, score).mean(dim=1), explanation)


class ROAD(PerturbationMetric):
    """ROAD MoRF/LeRF mean score over the fractions.

    Args:
        order: ``"morf"`` (lower is better, default) or ``"lerf"`` (higher is better).
        fractions: shares of patches removed.
        kwargs: ``score``, ``removal`` (default ``"road"``), ``max_batch_size``, torchmetrics arguments.

    Example:
        >>> from lightning_xai.modalities import TextModality
        >>> ROAD().higher_is_better, ROAD(order="lerf").higher_is_better
        (False, True)
        >>> ROAD().check(TextModality(special_ids=[0], pad_id=0, replacement_id=1))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_xai.errors.LightningXAIError: ROAD ('road') cannot score text inputs with removal='road': ...
    """

    #: Log-key name.
    name = "road"

    def __init__(self, order: Order = "morf", fractions: Sequence[float] = DEFAULT_FRACTIONS, **kwargs: Any) -> None:
        kwargs.setdefault("removal", "road")
        super().__init__(**kwargs)
        check_choice("ROAD", "order", order, ("morf", "lerf"))
        self.order = order
        self.fractions = tuple(float(f) for f in fractions)

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """MoRF: lower is better; LeRF: higher is better."""
        return self.order == "lerf"

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _road_masks(explanation, self.fractions, self.order)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _road_values(logits, explanation, self.score)


def road(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
         order: Order = "morf", fractions: Sequence[float] = DEFAULT_FRACTIONS, score: Score = "prob",
         removal: str | float = "road", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """ROAD of a batch (functional twin of :class:`ROAD`)."""
    check_choice("road", "order", order, ("morf", "lerf"))
    check_engine_args("road", score, max_batch_size)
    fractions = tuple(float(f) for f in fractions)
    return engine_values(forward, inputs, explanation, modality, _road_masks(explanation, fractions, order),
                         lambda logits: _road_values(logits, explanation, score), removal=removal,
                         max_batch_size=max_batch_size, reduction=reduction)
