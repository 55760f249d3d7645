"""Agreement between two maps of the same samples: two methods, or one method across epochs (stability).

* :func:`rank_correlation`: Spearman's ρ over the content tokens (Pearson correlation of average ranks, ties get
  the mean rank; NaN when a side is constant or fewer than 2 tokens). Range ``[-1, 1]``, higher = more agreement.
* :func:`topk_overlap`: ``|top_k(a) ∩ top_k(b)| / k'`` with ``k' = min(k, n)`` content tokens (ties: earlier
  position first). Range ``[0, 1]``.

Stability across epochs is the same functions applied to this epoch's and the previous epoch's map of the same
probe samples (the callback keeps the previous map).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_xai.metrics._base import Reduction, SampleMeanMetric, reduce
from lightning_xai.metrics._perturbation import relevance_ranks
from lightning_xai.types import Explanation


def average_ranks(values: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ranks (1-based, ties averaged) of the masked entries; unmasked entries get 0."""
    v = values.double()
    less = ((v[:, None, :] < v[:, :, None]) & mask[:, None, :]).sum(dim=2).double()
    equal = ((v[:, None, :] == v[:, :, None]) & mask[:, None, :]).sum(dim=2).double()
    return torch.where(mask, less + (equal + 1) / 2, torch.zeros_like(v))


def rank_correlation(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Row-wise Spearman ρ of ``a`` and ``b`` (``[B, N]``) over ``mask``.

    Example:
        >>> import torch
        >>> m = torch.tensor([[True, True, True, False]])
        >>> rank_correlation(torch.tensor([[1., 2., 3., 9.]]), torch.tensor([[3., 2., 1., 0.]]), m).tolist()
        [-1.0]
    """
    ra, rb = average_ranks(a, mask), average_ranks(b, mask)
    n = mask.sum(dim=1).double().clamp_min(1)
    ma, mb = ra.sum(dim=1) / n, rb.sum(dim=1) / n
    da, db = (ra - ma[:, None]) * mask, (rb - mb[:, None]) * mask
    cov = (da * db).sum(dim=1)
    denom = torch.sqrt((da * da).sum(dim=1) * (db * db).sum(dim=1))
    return torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.full_like(cov, math.nan)).float()


def topk_overlap(a: Tensor, b: Tensor, mask: Tensor, k: int = 5) -> Tensor:
    """Row-wise share of the top-``k`` of ``a`` that is also in the top-``k`` of ``b`` (over ``mask``).

    Example:
        >>> import torch
        >>> m = torch.ones(1, 4, dtype=torch.bool)
        >>> topk_overlap(torch.tensor([[4., 3., 2., 1.]]), torch.tensor([[4., 1., 3., 2.]]), m, k=2).tolist()
        [0.5]
    """
    ta = (relevance_ranks(a, mask) < k) & mask
    tb = (relevance_ranks(b, mask) < k) & mask
    kk = mask.sum(dim=1).clamp(max=k).float()
    inter = (ta & tb).sum(dim=1).float()
    return torch.where(kk > 0, inter / kk.clamp_min(1), torch.full_like(kk, math.nan))


class MapAgreement(SampleMeanMetric):
    """Mean agreement between two maps of the same samples (methods, or epochs for stability).

    ``update(explanation_a, explanation_b)``; tokens compared: content tokens of ``explanation_a``.

    Args:
        kind: ``"spearman"`` (default) or ``"topk"``.
        k: top-k size for ``"topk"``.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True

    def __init__(self, kind: Literal["spearman", "topk"] = "spearman", k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("spearman", "topk"):
            raise ValueError(f"MapAgreement(kind=...) must be 'spearman' or 'topk', got {kind!r}")
        self.kind, self.k = kind, k
        self.__dict__["name"] = "rank_agreement" if kind == "spearman" else f"top{k}_agreement"

    def values(self, a: Explanation, b: Explanation) -> Tensor:
        """Per-sample agreement of one batch."""
        mask = a.content_mask
        rb = b.relevance.to(a.relevance.device)
        if self.kind == "spearman":
            return rank_correlation(a.relevance, rb, mask)
        return topk_overlap(a.relevance, rb, mask, self.k)

    def update(self, explanation_a: Explanation, explanation_b: Explanation) -> None:  # type: ignore[override]
        """Accumulate the agreement of two maps of one batch."""
        self.update_values(self.values(explanation_a, explanation_b))


def map_agreement(a: Explanation, b: Explanation, *, kind: Literal["spearman", "topk"] = "spearman", k: int = 5,
                  reduction: Reduction = "mean") -> Tensor:
    """Agreement of two maps of a batch (functional twin of :class:`MapAgreement`)."""
    return reduce(MapAgreement(kind, k).values(a, b), reduction)
