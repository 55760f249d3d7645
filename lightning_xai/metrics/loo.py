"""Kendall-τ correlation with leave-one-out importances (ferret's ``taucorr_loo``; Attanasio et al. 2023).

``loo_t = p(x) − p(x without token t)`` for every content token ``t`` (one perturbed forward per token), and the
value is Kendall's τ-b between ``loo`` and the relevance over the content tokens (τ-b as ``scipy.stats.kendalltau``:
ties counted, NaN when either side is constant or fewer than 2 tokens). The token is **deleted** (``removal="delete"``,
the default: one batched id shift, no tokenizer needed). ferret also decodes the rest to text and tokenises it again;
``removal="retokenize"`` reproduces that exactly (the two agree wherever re-tokenising gives back the kept ids; they
differ where deleting a word piece changes how its neighbours tokenise). ``removal="replace"`` (or
``"mask"``/``"unk"``) replaces the token instead. **Higher is better**; range ``[-1, 1]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, check_engine_args, engine_values
from lightning_xai.metrics._perturbation import Score, scores_of, with_unperturbed
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


def kendall_tau(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Row-wise Kendall τ-b of ``a`` and ``b`` (``[B, N]``) over the positions where ``mask`` is True.

    Example:
        >>> import torch
        >>> m = torch.ones(1, 4, dtype=torch.bool)
        >>> round(kendall_tau(torch.tensor([[1., 2., 3., 4.]]), torch.tensor([[1., 3., 2., 4.]]), m).item(), 4)
        0.6667
    """
    sa = torch.sign(a[:, :, None].double() - a[:, None, :].double())
    sb = torch.sign(b[:, :, None].double() - b[:, None, :].double())
    pair = (mask[:, :, None] & mask[:, None, :]).double().triu(diagonal=1)
    concord = (sa * sb * pair).sum(dim=(1, 2))
    denom = torch.sqrt((sa.abs() * pair).sum(dim=(1, 2)) * (sb.abs() * pair).sum(dim=(1, 2)))
    return torch.where(denom > 0, concord / denom.clamp_min(1e-300), torch.full_like(denom, float("nan"))).float()


def _loo_masks(explanation: Explanation) -> Tensor:
    """``[B, N + 1, N]`` removal masks: row 0 unperturbed, row ``t + 1`` removes token ``t`` (if it is content)."""
    content = explanation.content_mask
    eye = torch.eye(content.shape[1], dtype=torch.bool, device=content.device)
    return with_unperturbed(eye[None] & content[:, :, None])


def _loo_values(logits: Tensor, explanation: Explanation, score: Score) -> Tensor:
    """``[B]`` τ-b between ``p(x) − p(x without t)`` and the relevance, from the logits of :func:`_loo_masks`."""
    scores = scores_of(logits, explanation.target, score)
    loo = scores[:, :1] - scores[:, 1:]
    return kendall_tau(loo, explanation.relevance.to(loo.device), explanation.content_mask.to(loo.device))


class LeaveOneOutTau(PerturbationMetric):
    """Kendall τ with leave-one-out importances (higher is better).

    Args:
        kwargs: ``score`` (prob, as ferret), ``removal`` (default ``"delete"``), ``max_batch_size``, torchmetrics
            arguments.
    """

    #: Log-key name (ferret's).
    name = "taucorr_loo"
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("removal", "delete")
        super().__init__(**kwargs)

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _loo_masks(explanation)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _loo_values(logits, explanation, self.score)


def leave_one_out_tau(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
                      score: Score = "prob", removal: str | float = "delete", max_batch_size: int = 256,
                      reduction: Reduction = "mean") -> Tensor:
    """τ-LOO of a batch (functional twin of :class:`LeaveOneOutTau`)."""
    check_engine_args("leave_one_out_tau", score, max_batch_size)
    return engine_values(forward, inputs, explanation, modality, _loo_masks(explanation),
                         lambda logits: _loo_values(logits, explanation, score), removal=removal,
                         max_batch_size=max_batch_size, reduction=reduction)
