"""Insertion AUC (Petsiuk et al., "RISE", BMVC 2018).

Starting from a canvas where every content token is removed (text: all replaced by the removal token, the
"[MASK]/[UNK]/[PAD] canvas"; images: every patch set to the baseline, RISE uses ``removal="blur"``), content tokens
are inserted back most-relevant-first (MoRF, default) or least-relevant-first in ``steps`` equal fractions
(``ceil(k n / steps)`` inserted at step ``k``); the score of the explained class is recorded and the trapezoid area
over ``[0, 1]`` is the value. MoRF: **higher is better**; LeRF: lower is better. Special tokens and padding are
never removed (they stay in the canvas). Samples without content tokens are skipped.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from lightning_xai.metrics._base import Reduction
from lightning_xai.metrics._perturbation import Score
from lightning_xai.metrics.deletion import Order, _curve_auc, _CurveMetric
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


class InsertionAUC(_CurveMetric):
    """Insertion AUC accumulated over batches (MoRF: higher is better); DDP-synced sums.

    The removal masks and values are those of :class:`~lightning_xai.metrics.DeletionAUC` with the ranked tokens
    kept instead of removed (``_deletion_auc_masks(..., insertion=True)``).

    Args:
        steps: insertion steps (``steps + 1`` curve points, the first is the all-removed canvas).
        order: ``"morf"`` (default) or ``"lerf"``.
        score: ``"prob"`` or ``"logit"``.
        removal: how tokens are removed from the canvas (None: the modality's own way).
        max_batch_size: rows per forward.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    #: Log-key name.
    name = "insertion_auc"
    insertion: ClassVar[bool] = True


def insertion_auc(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    *,
    steps: int = 10,
    order: Order = "morf",
    score: Score = "prob",
    removal: str | float | None = None,
    max_batch_size: int = 256,
    reduction: Reduction = "mean",
) -> Tensor:
    """Insertion AUC of a batch (functional twin of :class:`InsertionAUC`; arguments as :func:`deletion_auc`'s).

    Example (the planted token 7 decides; inserting it first lifts p from 0.5 to 1 at once):
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1)
        >>> forward = lambda x: torch.stack([torch.zeros(len(x["input_ids"])),
        ...                                  50 * (x["input_ids"] == 7).any(dim=1).float()], dim=1)
        >>> valid = torch.ones(1, 4, dtype=torch.bool)
        >>> oracle = Explanation("o", torch.tensor([[0.0, 0.0, 1.0, 0.0]]), valid, ~valid, torch.tensor([1]))
        >>> round(float(insertion_auc(forward, {"input_ids": torch.tensor([[5, 6, 7, 8]])}, oracle, text, steps=4)), 4)
        0.9375
    """
    return _curve_auc("insertion_auc", True, forward, inputs, explanation, modality, steps, order, score, removal,
                      max_batch_size, reduction)
