"""Agreement between two maps of the same samples: two methods, or one method across epochs (stability).

* :func:`rank_correlation`: Spearman's ρ over the content tokens (Pearson correlation of average ranks, ties get
  the mean rank; NaN when a side is constant or fewer than 2 tokens). Range ``[-1, 1]``, higher = more agreement.
* :func:`topk_overlap`: ``|top_k(a) ∩ top_k(b)| / k'`` with ``k' = min(k, n)`` content tokens (ties: earlier
  position first). Range ``[0, 1]``.

:class:`MapAgreement` scores ``update(explanation, context)`` against ``context.reference``: another method's map of
the same samples (agreement), or the same method's map of the previous epoch (stability).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lightning_xai.metrics._base import Reduction, SampleMeanMetric, ScoringContext, check_choice, reduce
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


AgreementKind = Literal["spearman", "topk"]


def _map_agreement_values(a: Explanation, b: Explanation, kind: AgreementKind, k: int) -> Tensor:
    """``[B]`` agreement of two maps of the same samples over the content tokens of ``a``."""
    mask = a.content_mask
    rb = b.relevance.to(a.relevance.device)
    if kind == "spearman":
        return rank_correlation(a.relevance, rb, mask)
    return topk_overlap(a.relevance, rb, mask, k)


class MapAgreement(SampleMeanMetric):
    """Mean agreement between two maps of the same samples (methods, or epochs for stability).

    ``update(explanation, context)`` compares ``explanation`` with ``context.reference`` over the content tokens of
    ``explanation``.

    Args:
        kind: ``"spearman"`` (default) or ``"topk"``.
        k: top-k size for ``"topk"``.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_xai.metrics import ScoringContext
        >>> content = torch.ones(1, 4, dtype=torch.bool)
        >>> def exp(*relevance):
        ...     return Explanation("m", torch.tensor([relevance]), content, ~content, torch.tensor([0]))
        >>> metric = MapAgreement("topk", k=2)
        >>> metric.update(exp(4.0, 3.0, 2.0, 1.0), ScoringContext(reference=exp(4.0, 1.0, 3.0, 2.0)))
        >>> metric.name, float(metric.compute())
        ('top2_agreement', 0.5)
    """

    higher_is_better = True
    requires: ClassVar[frozenset[str]] = frozenset({"reference"})

    def __init__(self, kind: AgreementKind = "spearman", k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("MapAgreement", "kind", kind, ("spearman", "topk"))
        self.kind, self.k = kind, k

    @property
    def name(self) -> str:  # type: ignore[override]
        """Log-key name: ``"rank_agreement"`` or ``"top<k>_agreement"``."""
        return "rank_agreement" if self.kind == "spearman" else f"top{self.k}_agreement"

    def sample_values(self, explanation: Explanation, context: ScoringContext) -> Tensor:
        """Per-sample agreement of ``explanation`` with ``context.reference``."""
        self._require(context, "reference")
        assert context.reference is not None
        return _map_agreement_values(explanation, context.reference, self.kind, self.k)


def map_agreement(a: Explanation, b: Explanation, *, kind: AgreementKind = "spearman", k: int = 5,
                  reduction: Reduction = "mean") -> Tensor:
    """Agreement of two maps of a batch (functional twin of :class:`MapAgreement`)."""
    check_choice("map_agreement", "kind", kind, ("spearman", "topk"))
    return reduce(_map_agreement_values(a, b, kind, k), reduction)
