"""Plausibility against ground-truth rationale masks (ERASER; ferret's token F1 / IOU / AUPRC ``_plau``).

All three compare the relevance of the content tokens with a human rationale mask ``[B, N]`` bool passed as
``context.rationale`` to ``update(explanation, context)`` (a batch without one is skipped: a probe set may have
rationales for some batches only). **Higher is better**, range ``[0, 1]``.

* token F1 / IOU of the top-k: the predicted rationale is the top ``k`` content tokens (default 5, ferret's
  ``top_k_rationale``) that have relevance > 0 (``only_pos``, ferret's default); ties: earlier position first.
  ``F1 = 2|P∩G| / (|P| + |G|)``, ``IOU = |P∩G| / |P∪G|`` (0 when both are empty).
* AUPRC: area (trapezoid over recall) under the precision-recall curve of the relevance (negative values clipped
  to 0 when ``only_pos``) against the rationale: thresholds at every distinct score, plus the ``(recall 0,
  precision 1)`` end point (``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve``'s points).
  Samples whose rationale has no positive token are skipped (NaN).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lightning_xai.metrics._base import Reduction, SampleMeanMetric, ScoringContext, check_choice, reduce
from lightning_xai.metrics._perturbation import relevance_ranks, skip_empty
from lightning_xai.types import Explanation


def topk_rationale(relevance: Tensor, content: Tensor, k: int, only_pos: bool = True) -> Tensor:
    """``[B, N]`` bool: the top-``k`` content tokens (only those with relevance > 0 when ``only_pos``)."""
    top = (relevance_ranks(relevance, content) < k) & content
    return top & (relevance > 0) if only_pos else top


def token_f1(relevance: Tensor, rationale: Tensor, content: Tensor, k: int = 5, only_pos: bool = True) -> Tensor:
    """Per-row F1 between the top-``k`` tokens and the rationale (content tokens only).

    Example:
        >>> import torch
        >>> c = torch.ones(1, 4, dtype=torch.bool)
        >>> token_f1(torch.tensor([[4., 3., 2., 1.]]), torch.tensor([[True, False, True, False]]), c, k=2).tolist()
        [0.5]
    """
    pred = topk_rationale(relevance, content, k, only_pos)
    gold = rationale.bool() & content
    inter = (pred & gold).sum(dim=1).float()
    total = (pred.sum(dim=1) + gold.sum(dim=1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.zeros_like(total))


def token_iou(relevance: Tensor, rationale: Tensor, content: Tensor, k: int = 5, only_pos: bool = True) -> Tensor:
    """Per-row IOU between the top-``k`` tokens and the rationale (content tokens only)."""
    pred = topk_rationale(relevance, content, k, only_pos)
    gold = rationale.bool() & content
    inter = (pred & gold).sum(dim=1).float()
    union = (pred | gold).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))


def auprc(relevance: Tensor, rationale: Tensor, content: Tensor, only_pos: bool = True) -> Tensor:
    """Per-row area under the precision-recall curve (see the module docstring; NaN without a positive)."""
    out = []
    for row in range(relevance.shape[0]):
        keep = content[row]
        scores = relevance[row][keep].double()
        if only_pos:
            scores = scores.clamp_min(0)
        gold = rationale[row][keep].bool()
        positives = int(gold.sum())
        if positives == 0:
            out.append(math.nan)
            continue
        order = torch.sort(scores, descending=True, stable=True).indices
        s, g = scores[order], gold[order].double()
        tps, fps = torch.cumsum(g, 0), torch.cumsum(1 - g, 0)
        last = torch.cat([s[1:] != s[:-1], torch.tensor([True])])  # end of each distinct-score block
        precision = tps[last] / (tps[last] + fps[last])
        recall = tps[last] / positives
        recall = torch.cat([torch.zeros(1, dtype=torch.float64), recall])
        precision = torch.cat([torch.ones(1, dtype=torch.float64), precision])
        out.append(float(((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) / 2).sum()))
    return torch.tensor(out, dtype=torch.float32, device=relevance.device)


Kind = Literal["token_f1", "token_iou", "auprc"]
KINDS = ("token_f1", "token_iou", "auprc")


def _plausibility_values(explanation: Explanation, rationale: Tensor, kind: Kind, k: int, only_pos: bool) -> Tensor:
    """``[B]`` plausibility of each map against its rationale (NaN for samples without content tokens)."""
    content = explanation.content_mask
    rationale = rationale.to(content.device)
    if kind == "auprc":
        values = auprc(explanation.relevance, rationale, content, only_pos)
    else:
        fn = token_f1 if kind == "token_f1" else token_iou
        values = fn(explanation.relevance, rationale, content, k, only_pos)
    return skip_empty(values, explanation)


class Plausibility(SampleMeanMetric):
    """Token F1 / IOU of the top-k, or AUPRC, against rationale masks (higher is better).

    ``update(explanation, context)`` reads ``context.rationale``; a batch without one is skipped (not an error).

    Args:
        kind: ``"token_f1"`` (default), ``"token_iou"`` or ``"auprc"``.
        k: top-k size for F1 / IOU (ferret: 5).
        only_pos: only positive relevance enters the predicted rationale (ferret's default).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_xai.metrics import ScoringContext
        >>> content = torch.ones(1, 4, dtype=torch.bool)
        >>> exp = Explanation("m", torch.tensor([[4.0, 3.0, 2.0, 1.0]]), content, ~content, torch.tensor([0]))
        >>> metric = Plausibility("token_f1", k=2)
        >>> metric.update(exp, ScoringContext(rationale=torch.tensor([[True, False, True, False]])))
        >>> metric.update(exp, ScoringContext())  # no rationale for this batch: skipped
        >>> metric.name, float(metric.compute())
        ('token_f1_plausibility', 0.5)
    """

    higher_is_better = True
    requires: ClassVar[frozenset[str]] = frozenset({"rationale"})

    def __init__(self, kind: Kind = "token_f1", k: int = 5, only_pos: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("Plausibility", "kind", kind, KINDS)
        self.kind, self.k, self.only_pos = kind, k, only_pos

    @property
    def name(self) -> str:  # type: ignore[override]
        """Log-key name: ``"<kind>_plausibility"``."""
        return f"{self.kind}_plausibility"

    def sample_values(self, explanation: Explanation, context: ScoringContext) -> Tensor | None:
        """Per-sample values against ``context.rationale`` (None without one: the batch is skipped)."""
        if context.rationale is None:
            return None
        return _plausibility_values(explanation, context.rationale, self.kind, self.k, self.only_pos)


def plausibility(explanation: Explanation, rationale: Tensor, *, kind: Kind = "token_f1", k: int = 5,
                 only_pos: bool = True, reduction: Reduction = "mean") -> Tensor:
    """Plausibility of a batch (functional twin of :class:`Plausibility`).

    Example:
        >>> import torch
        >>> content = torch.ones(1, 4, dtype=torch.bool)
        >>> exp = Explanation("m", torch.tensor([[0.9, 0.8, 0.7, 0.6]]), content, ~content, torch.tensor([0]))
        >>> round(plausibility(exp, torch.tensor([[False, True, False, True]]), kind="auprc").item(), 4)
        0.3333
    """
    check_choice("plausibility", "kind", kind, KINDS)
    return reduce(_plausibility_values(explanation, rationale, kind, k, only_pos), reduction)
