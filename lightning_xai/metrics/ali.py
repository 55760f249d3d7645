"""Ali et al. (ICML 2022, "XAI for Transformers: Better Explanations through Conservative Propagation") curves.

``utils.py::flip`` of the official code: fractions ``linspace(0, 1, 11)`` (here ``ceil(k n / 10)`` tokens at step
``k``), replacement token **[UNK]** (``removal="unk"`` default), score = softmax probability of the explained class,
area by the trapezoid rule over ``[0, 1]``:

* AUAC ("generate"): start from every content token replaced by [UNK] and insert tokens by **descending signed**
  relevance; **higher is better**, range ``[0, 1]``.
* AUPC ("pruning"): replace tokens by **ascending |R|** (least relevant by magnitude first); **higher is better**,
  range ``[0, 1]``.
* AU-MSE: the same pruning run with ``y_k = Σ_c (logit_c(x) − logit_c(x_k))²``; **lower is better**, ``≥ 0``.

Deviation: Ali's generate canvas also turns [CLS]/[SEP] into [UNK]; here special tokens are never perturbed.
Samples without content tokens are skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, check_arg, check_engine_args, engine_values
from lightning_xai.metrics._perturbation import (
    curve_masks,
    removal_schedule,
    scores_of,
    skip_empty,
    trapezoid_auc,
    with_unperturbed,
)
from lightning_xai.metrics.engine import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

AliKind = Literal["auac", "aupc", "au_mse"]


def _ali_masks(explanation: Explanation, steps: int, kind: AliKind) -> Tensor:
    """``[B, steps + 2, N]`` removal masks: row 0 unperturbed, then the curve (generate for AUAC, else pruning)."""
    content = explanation.content_mask
    schedule = removal_schedule(content.sum(dim=1), steps)
    if kind == "auac":  # insert by descending signed relevance into the all-[UNK] canvas
        masks = curve_masks(explanation.relevance, content, schedule, descending=True, keep=True)
    else:  # prune by ascending |R|
        masks = curve_masks(explanation.relevance.abs(), content, schedule, descending=False)
    return with_unperturbed(masks)


def _ali_values(logits: Tensor, explanation: Explanation, kind: AliKind) -> Tensor:
    """``[B]`` trapezoid areas of the curves of :func:`_ali_masks`.

    The curve is the explained class's probability, or ``Σ_c (logit_c(x) − logit_c(x_k))²`` for AU-MSE.
    """
    if kind == "au_mse":
        curve = ((logits[:, :1].float() - logits[:, 1:].float()) ** 2).sum(dim=-1)
    else:
        curve = scores_of(logits[:, 1:], explanation.target, "prob")
    return skip_empty(trapezoid_auc(curve), explanation)


def _ali(
    kind: AliKind, forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, steps: int,
    removal: str | float | None, max_batch_size: int, reduction: Reduction,
) -> Tensor:
    """The three functionals (they differ only in ``kind``)."""
    check_arg(kind, "steps", steps, steps >= 1, ">= 1")
    check_engine_args(kind, "prob", max_batch_size)
    return engine_values(forward, inputs, explanation, modality, _ali_masks(explanation, steps, kind),
                         lambda logits: _ali_values(logits, explanation, kind), removal=removal,
                         max_batch_size=max_batch_size, reduction=reduction)


class _AliCurve(PerturbationMetric):
    kind: ClassVar[AliKind]

    def __init__(self, steps: int = 10, removal: str | float | None = "unk", **kwargs: Any) -> None:
        super().__init__(removal=removal, **kwargs)
        check_arg(type(self).__name__, "steps", steps, steps >= 1, ">= 1")
        self.steps = steps

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        return _ali_masks(explanation, self.steps, self.kind)

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        return _ali_values(logits, explanation, self.kind)


class AUAC(_AliCurve):
    """Area under the activation (generate) curve, Ali et al. 2022 (higher is better)."""

    #: Log-key name.
    name = "auac"
    higher_is_better = True
    kind: ClassVar[AliKind] = "auac"


class AUPC(_AliCurve):
    """Area under the pruning curve (ascending |R|), Ali et al. 2022 (higher is better)."""

    #: Log-key name.
    name = "aupc"
    higher_is_better = True
    kind: ClassVar[AliKind] = "aupc"


class AUMSE(_AliCurve):
    """Area under the logit-MSE pruning curve, Ali et al. 2022 (lower is better)."""

    #: Log-key name.
    name = "au_mse"
    higher_is_better = False
    kind: ClassVar[AliKind] = "au_mse"


def auac(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *, steps: int = 10,
         removal: str | float | None = "unk", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """AUAC of a batch (functional twin of :class:`AUAC`).

    Example (inserting the one token the model reads first: the curve jumps to ~1 after the canvas):
        >>> import torch
        >>> from lightning_xai.modalities import TextModality
        >>> from lightning_xai.types import Explanation
        >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=1, token_ids={"unk": 1})
        >>> forward = lambda x: torch.stack([torch.zeros(len(x["input_ids"])),
        ...                                  50 * (x["input_ids"] == 7).any(dim=1).float()], dim=1)
        >>> valid = torch.ones(1, 2, dtype=torch.bool)
        >>> oracle = Explanation("o", torch.tensor([[1.0, 0.0]]), valid, ~valid, torch.tensor([1]))
        >>> round(float(auac(forward, {"input_ids": torch.tensor([[7, 8]])}, oracle, text, steps=2)), 4)  # p: .5 1 1
        0.875
    """
    return _ali("auac", forward, inputs, explanation, modality, steps, removal, max_batch_size, reduction)


def aupc(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *, steps: int = 10,
         removal: str | float | None = "unk", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """AUPC of a batch (functional twin of :class:`AUPC`; arguments as :func:`auac`'s)."""
    return _ali("aupc", forward, inputs, explanation, modality, steps, removal, max_batch_size, reduction)


def au_mse(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *, steps: int = 10,
           removal: str | float | None = "unk", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """AU-MSE of a batch (functional twin of :class:`AUMSE`; arguments as :func:`auac`'s)."""
    return _ali("au_mse", forward, inputs, explanation, modality, steps, removal, max_batch_size, reduction)
