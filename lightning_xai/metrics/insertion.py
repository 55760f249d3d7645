"""Insertion AUC (Petsiuk et al., "RISE", BMVC 2018).

Starting from a canvas where every content token is removed (text: all replaced by the removal token, the
"[MASK]/[UNK]/[PAD] canvas"; images: every patch set to the baseline, RISE uses ``removal="blur"``), content tokens
are inserted back most-relevant-first (MoRF, default) or least-relevant-first in ``steps`` equal fractions
(``ceil(k n / steps)`` inserted at step ``k``); the score of the explained class is recorded and the trapezoid area
over ``[0, 1]`` is the value. MoRF: **higher is better**; LeRF: lower is better. Special tokens and padding are
never removed (they stay in the canvas). Samples without content tokens are skipped.
"""

from __future__ import annotations

from torch import Tensor

from lightning_xai.metrics._base import Reduction, reduce
from lightning_xai.metrics._perturbation import ForwardFn, Score
from lightning_xai.metrics.deletion import Order, _CurveMetric
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


class InsertionAUC(_CurveMetric):
    """Insertion AUC accumulated over batches (MoRF: higher is better); DDP-synced sums.

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
    higher_is_better = True
    insertion = True


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
    """Insertion AUC of a batch (functional twin of :class:`InsertionAUC`; arguments as there)."""
    metric = InsertionAUC(steps=steps, order=order, score=score, removal=removal, max_batch_size=max_batch_size)
    return reduce(metric.values(forward, inputs, explanation, modality), reduction)
