"""AOPC comprehensiveness and sufficiency (DeYoung et al., ERASER, ACL 2020; Eggen et al. 2025; ferret 0.4.2).

For a sample with ``n`` content tokens and a set of bins, ``r_k`` is the top-``k`` content tokens by relevance
(ties: later position first for ``"eraser"`` and ``"ferret"``, as the ``numpy.argsort(scores)[-k:]`` of their code;
earlier first for ``"eggen"``) and ``p`` is the score (softmax probability by default) of the explained class:

* comprehensiveness ``p(x) − p(x without r_k)`` (remove the rationale): **higher is better**, range ``[-1, 1]``;
* sufficiency ``p(x) − p(r_k)`` (keep only the rationale, every other content token removed): **lower is better**,
  range ``[-1, 1]``.

Conventions (``convention=``):

* ``"eraser"`` (default): bins ``{1, 5, 10, 20, 50}%``, ``k = ceil(f n)``; the value is the **mean of the 5
  deltas** (ERASER's scorer ``np.average`` over instances x bins, no ``k = 0`` term; the paper's ``1/(|B|+1)`` is
  not used; ``k = math.ceil(n * f)`` as in ERASER's baseline models, checked for every ``n`` up to 600 in the
  tests). ERASER's baseline models delete the removed tokens: ``removal="delete"`` reproduces that; the default
  keeps the modality's removal (text: ``[MASK]`` replacement), which also works for images.
* ``"eggen"``: ``K = {0, 10, 20, 50}%``, ``k = ceil(f n)``; the value is the **sum of the 4 deltas divided by
  |K| + 1 = 5** (the ``k = 0`` comprehensiveness delta is 0; the ``k = 0`` sufficiency input has every content
  token removed). Eggen et al. replace tokens by ``[MASK]``.
* ``"ferret"``: ferret 0.4.2's defaults: thresholds ``numpy.arange(0.1, 1.1, 0.1)``, ``k = int(f n)`` (floor;
  ``k = 0`` skipped), ``only_pos`` (only tokens with relevance > 0 enter the rationale), a threshold whose token set
  equals the previous kept one is skipped, the value is the mean over the kept thresholds; ferret deletes the tokens,
  decodes the rest to text and tokenises it again, so ``removal`` defaults to ``"retokenize"`` (needs the tokenizer in
  the modality; ``removal="delete"`` deletes without the round trip, which differs from ferret only where
  re-tokenising a perturbed text does not give back the kept ids, e.g. a lone ``##ing`` piece). A threshold whose
  rationale is empty (``int(f n) = 0``, or no token with relevance > 0 among its top ``k``) is skipped, as ferret's
  top-k returns None there; when every threshold is skipped, i.e. **no content token has positive relevance**
  (an all-negative or all-zero map), the value is ferret's constant: **comprehensiveness 0, sufficiency 1** (the
  worst sufficiency: ferret's ``Evaluation(..., 0)`` and ``Evaluation(..., 1)`` when no rationale was built).

Removal: the modality's own (text default: replacement token) unless ``removal=`` is given. Samples without
content tokens are skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from lightning_xai.metrics._base import (
    PerturbationMetric,
    Reduction,
    check_choice,
    check_engine_args,
    engine_values,
)
from lightning_xai.metrics._perturbation import Score, relevance_ranks, scores_of, skip_empty, with_unperturbed
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

Convention = Literal["eraser", "eggen", "ferret"]
CONVENTIONS: dict[str, tuple[float, ...]] = {
    "eraser": (0.01, 0.05, 0.1, 0.2, 0.5),
    "eggen": (0.0, 0.1, 0.2, 0.5),
    "ferret": tuple(float(f) for f in np.arange(0.1, 1.1, 0.1)),
}
#: ferret 0.4.2's value when no threshold gives a non-empty rationale (no content token with relevance > 0):
#: ``{comprehensiveness: 0, sufficiency: 1}`` (its ``Evaluation(SHORT_NAME, 0)`` / ``Evaluation(SHORT_NAME, 1)``).
FERRET_EMPTY_RATIONALE: dict[bool, float] = {False: 0.0, True: 1.0}


def aopc_bins(explanation: Explanation, convention: Convention) -> tuple[Tensor, Tensor, Tensor]:
    """``(counts [B, T], weights [B, T], ranks [B, N])`` of a convention: tokens in each bin, each bin's weight."""
    check_choice("aopc_bins", "convention", convention, tuple(CONVENTIONS))
    content = explanation.content_mask
    relevance = explanation.relevance.float()
    n = content.sum(dim=1).double()
    fractions = torch.tensor(CONVENTIONS[convention], dtype=torch.float64, device=n.device)
    if convention == "ferret":
        counts = torch.floor(fractions[None, :] * n[:, None]).long()  # int(f * n), f from numpy.arange
        positive = (content & (relevance > 0)).sum(dim=1)
        effective = torch.minimum(counts, positive[:, None])
        previous = torch.cat([torch.full_like(effective[:, :1], -1), effective[:, :-1]], dim=1)
        # a kept threshold needs a non-empty rationale (k > 0 and, only_pos, at least one positive token: ferret's
        # top-k gives None otherwise) and a token set different from the previous kept one (sets are nested, so
        # "different" means a different size; skipped thresholds repeat the previous size)
        weights = ((effective > 0) & (effective != previous)).double()
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
        return effective, weights, _later_first_ranks(relevance, content)
    counts = torch.ceil(fractions[None, :] * n[:, None] - 1e-9).long()
    divisor = len(fractions) + 1 if convention == "eggen" else len(fractions)
    weights = torch.full(counts.shape, 1.0 / divisor, dtype=torch.float64, device=n.device)
    ranks = _later_first_ranks(relevance, content) if convention == "eraser" else relevance_ranks(relevance, content)
    return counts, weights, ranks


def _later_first_ranks(relevance: Tensor, content: Tensor) -> Tensor:
    """Descending ranks with ties to the later position, as numpy's stable ascending ``argsort()[-k:]`` reversed."""
    return relevance_ranks(relevance.flip(1), content.flip(1)).flip(1)


def _default_removal(convention: Convention) -> str | None:
    """The removal a convention defaults to: ferret's delete + decode + re-tokenise, else the modality's own."""
    return "retokenize" if convention == "ferret" else None


def _aopc_masks(explanation: Explanation, convention: Convention, sufficiency: bool) -> Tensor:
    """``[B, T + 1, N]`` removal masks: row 0 unperturbed, then one per bin (the rationale removed, or kept)."""
    counts, _, ranks = aopc_bins(explanation, convention)
    content = explanation.content_mask
    top = (ranks[:, None, :] < counts[:, :, None]) & content[:, None, :]
    return with_unperturbed((content[:, None, :] & ~top) if sufficiency else top)


def _aopc_values(
    logits: Tensor, explanation: Explanation, convention: Convention, score: Score, sufficiency: bool
) -> Tensor:
    """``[B]`` weighted mean of ``p(x) − p(x_k)`` over the bins, from the logits of :func:`_aopc_masks`.

    ``"ferret"`` with no kept threshold (no content token has relevance > 0): ferret's constants, comprehensiveness
    0 and sufficiency 1 (:data:`FERRET_EMPTY_RATIONALE`).
    """
    _, weights, _ = aopc_bins(explanation, convention)
    scores = scores_of(logits, explanation.target, score).double()
    deltas = scores[:, :1] - scores[:, 1:]
    weights = weights.to(deltas.device)
    values = (deltas * weights).sum(dim=1)
    if convention == "ferret":
        values = values.masked_fill(weights.sum(dim=1) == 0, FERRET_EMPTY_RATIONALE[sufficiency])
    return skip_empty(values.float(), explanation)


def _aopc(
    owner: str, sufficiency: bool, forward: ForwardFn, inputs: ModelInputs, explanation: Explanation,
    modality: Modality, convention: Convention, score: Score, removal: str | float | None, max_batch_size: int,
    reduction: Reduction,
) -> Tensor:
    """The comprehensiveness and sufficiency functionals (they differ only in ``sufficiency``)."""
    check_choice(owner, "convention", convention, tuple(CONVENTIONS))
    check_engine_args(owner, score, max_batch_size)
    return engine_values(
        forward, inputs, explanation, modality, _aopc_masks(explanation, convention, sufficiency),
        lambda logits: _aopc_values(logits, explanation, convention, score, sufficiency),
        removal=_default_removal(convention) if removal is None else removal, max_batch_size=max_batch_size,
        reduction=reduction,
    )


class _AOPC(PerturbationMetric):
    sufficiency: ClassVar[bool] = False

    def __init__(self, convention: Convention = "eraser", **kwargs: Any) -> None:
        kwargs.setdefault("removal", _default_removal(convention))
        super().__init__(**kwargs)
        check_choice(type(self).__name__, "convention", convention, tuple(CONVENTIONS))
        self.convention = convention

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _aopc_masks(explanation, self.convention, self.sufficiency)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _aopc_values(logits, explanation, self.convention, self.score, self.sufficiency)


class AOPCComprehensiveness(_AOPC):
    """AOPC comprehensiveness (higher is better); see the module docstring for ``convention``.

    Args:
        convention: ``"eraser"`` (default), ``"eggen"`` or ``"ferret"``.
        kwargs: ``score``, ``removal``, ``max_batch_size`` and :class:`torchmetrics.Metric` arguments.
    """

    #: Log-key name.
    name = "aopc_comprehensiveness"
    higher_is_better = True


class AOPCSufficiency(_AOPC):
    """AOPC sufficiency (lower is better); see the module docstring for ``convention``."""

    #: Log-key name.
    name = "aopc_sufficiency"
    higher_is_better = False
    sufficiency: ClassVar[bool] = True


def aopc_comprehensiveness(
    forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
    convention: Convention = "eraser", score: Score = "prob", removal: str | float | None = None,
    max_batch_size: int = 256, reduction: Reduction = "mean",
) -> Tensor:
    """AOPC comprehensiveness of a batch (functional twin of :class:`AOPCComprehensiveness`).

    Example (Eggen: one planted token decides; removing it drops p from ~1 to 0.5 at every bin > 0):
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> def forward(x):
        ...     has_7 = (x["input_ids"] == 7).any(dim=1).float()
        ...     return torch.stack([torch.zeros_like(has_7), 100 * has_7], dim=1)
        >>> valid = torch.ones(1, 4, dtype=torch.bool)
        >>> oracle = Explanation("o", torch.tensor([[0.0, 0.0, 1.0, 0.0]]), valid, ~valid, torch.tensor([1]))
        >>> inputs = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
        >>> round(float(aopc_comprehensiveness(forward, inputs, oracle, text, convention="eggen")), 4)  # 3 x 0.5 / 5
        0.3
    """
    return _aopc("aopc_comprehensiveness", False, forward, inputs, explanation, modality, convention, score, removal,
                 max_batch_size, reduction)


def aopc_sufficiency(
    forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *,
    convention: Convention = "eraser", score: Score = "prob", removal: str | float | None = None,
    max_batch_size: int = 256, reduction: Reduction = "mean",
) -> Tensor:
    """AOPC sufficiency of a batch (functional twin of :class:`AOPCSufficiency`; arguments as the other's).

    Example (ferret: no content token has positive relevance, so no rationale is built: ferret's 1, and 0 for
    comprehensiveness):
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> def forward(x):
        ...     return torch.stack([torch.zeros(x["input_ids"].shape[0]), x["input_ids"].sum(dim=1).float()], dim=1)
        >>> valid = torch.ones(1, 4, dtype=torch.bool)
        >>> negative = Explanation("n", torch.tensor([[-0.5, -0.1, -0.2, -0.3]]), valid, ~valid, torch.tensor([1]))
        >>> inputs = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
        >>> float(aopc_sufficiency(forward, inputs, negative, text, convention="ferret", removal="delete"))
        1.0
        >>> float(aopc_comprehensiveness(forward, inputs, negative, text, convention="ferret", removal="delete"))
        0.0
    """
    return _aopc("aopc_sufficiency", True, forward, inputs, explanation, modality, convention, score, removal,
                 max_batch_size, reduction)


__all__ = ["AOPCComprehensiveness", "AOPCSufficiency", "aopc_comprehensiveness", "aopc_sufficiency"]
