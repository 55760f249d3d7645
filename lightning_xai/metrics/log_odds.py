"""Log-odds (Shrikumar et al. 2017; Chen et al. 2020 for text).

``LOR = log p(ŷ | x̃) − log p(ŷ | x)`` where ``x̃`` is ``x`` with the top ``ceil(fraction · n)`` content tokens
removed (default fraction 20%; removal: the modality's own, text default replacement by ``[MASK]``) and ``p`` the
softmax probability of the explained class (computed with ``log_softmax``). **Lower (more negative) is better**;
range ``(-inf, +inf)``. Samples without content tokens are skipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, check_arg, check_engine_args, engine_values
from lightning_xai.metrics._perturbation import curve_masks, skip_empty, with_unperturbed
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


def _check_fraction(owner: str, fraction: float) -> None:
    check_arg(owner, "fraction", fraction, 0 < fraction <= 1, "in (0, 1]")


def _log_odds_masks(explanation: Explanation, fraction: float) -> Tensor:
    """``[B, 2, N]`` removal masks: row 0 unperturbed, row 1 the top ``ceil(fraction · n)`` content tokens."""
    content = explanation.content_mask
    counts = torch.ceil(content.sum(dim=1, keepdim=True) * fraction - 1e-9).long()
    return with_unperturbed(curve_masks(explanation.relevance, content, counts))


def _log_odds_values(logits: Tensor, explanation: Explanation) -> Tensor:
    """``[B]`` ``log p(ŷ | x̃) − log p(ŷ | x)`` from the logits of :func:`_log_odds_masks`."""
    target = explanation.target.to(logits.device)[:, None, None].expand(-1, logits.shape[1], 1)
    logp = logits.float().log_softmax(dim=-1).gather(2, target)[..., 0]
    return skip_empty(logp[:, 1] - logp[:, 0], explanation)


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
        _check_fraction(type(self).__name__, fraction)
        self.fraction = fraction

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _log_odds_masks(explanation, self.fraction)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _log_odds_values(logits, explanation)


def log_odds(
    forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
    fraction: float = 0.2, removal: str | float | None = None, max_batch_size: int = 256,
    reduction: Reduction = "mean",
) -> Tensor:
    """Log-odds of a batch (functional twin of :class:`LogOdds`).

    Example (removing the one token the model reads, 20% of 5, drops p(class 1) from ~1 to 0.5):
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> forward = lambda x: torch.stack([torch.zeros(len(x["input_ids"])),
        ...                                  50 * (x["input_ids"] == 7).any(dim=1).float()], dim=1)
        >>> valid = torch.ones(1, 5, dtype=torch.bool)
        >>> oracle = Explanation("o", torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]), valid, ~valid, torch.tensor([1]))
        >>> round(float(log_odds(forward, {"input_ids": torch.tensor([[5, 6, 7, 8, 9]])}, oracle, text)), 4)
        -0.6931
    """
    _check_fraction("log_odds", fraction)
    check_engine_args("log_odds", "prob", max_batch_size)
    return engine_values(forward, inputs, explanation, modality, _log_odds_masks(explanation, fraction),
                         lambda logits: _log_odds_values(logits, explanation), removal=removal,
                         max_batch_size=max_batch_size, reduction=reduction)
