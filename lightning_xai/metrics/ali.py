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

from typing import Any

from torch import Tensor

from lightning_xai.metrics._base import PerturbationMetric, Reduction, reduce, with_unperturbed
from lightning_xai.metrics._perturbation import (
    ForwardFn,
    curve_masks,
    removal_schedule,
    scores_of,
    trapezoid_auc,
)
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


class _AliCurve(PerturbationMetric):
    generate = False

    def __init__(self, steps: int = 10, removal: str | float | None = "unk", **kwargs: Any) -> None:
        super().__init__(removal=removal, **kwargs)
        if steps < 1:
            raise ValueError(f"{type(self).__name__}(steps=...) must be >= 1, got {steps}")
        self.steps = steps

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """Removal masks ``[B, R, N]`` (row 0 unperturbed)."""
        content = explanation.content_mask
        schedule = removal_schedule(content.sum(dim=1), self.steps)
        if self.generate:
            masks = curve_masks(explanation.relevance, content, schedule, descending=True, keep=True)
        else:
            masks = curve_masks(explanation.relevance.abs(), content, schedule, descending=False)
        return with_unperturbed(masks)

    def curve(self, logits: Tensor, explanation: Explanation) -> Tensor:
        return scores_of(logits[:, 1:], explanation.target, "prob")

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """Per-sample values ``[B]`` (NaN = skipped)."""
        auc = trapezoid_auc(self.curve(logits, explanation))
        return auc.masked_fill(~explanation.content_mask.any(dim=1), float("nan"))


class AUAC(_AliCurve):
    """Area under the activation (generate) curve, Ali et al. 2022 (higher is better)."""

    #: Log-key name.
    name = "auac"
    higher_is_better = True
    generate = True


class AUPC(_AliCurve):
    """Area under the pruning curve (ascending |R|), Ali et al. 2022 (higher is better)."""

    #: Log-key name.
    name = "aupc"
    higher_is_better = True


class AUMSE(_AliCurve):
    """Area under the logit-MSE pruning curve, Ali et al. 2022 (lower is better)."""

    #: Log-key name.
    name = "au_mse"
    higher_is_better = False

    def curve(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """``Σ_c (logit_c(x) − logit_c(x_k))²`` per step."""
        return ((logits[:, :1].float() - logits[:, 1:].float()) ** 2).sum(dim=-1)


def _functional(cls: type[_AliCurve], forward: ForwardFn, inputs: ModelInputs, explanation: Explanation,
                modality: Modality, steps: int, removal: str | float | None, max_batch_size: int,
                reduction: Reduction) -> Tensor:
    metric = cls(steps=steps, removal=removal, max_batch_size=max_batch_size)
    return reduce(metric.values(forward, inputs, explanation, modality), reduction)


def auac(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *, steps: int = 10,
         removal: str | float | None = "unk", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """AUAC of a batch (functional twin of :class:`AUAC`)."""
    return _functional(AUAC, forward, inputs, explanation, modality, steps, removal, max_batch_size, reduction)


def aupc(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *, steps: int = 10,
         removal: str | float | None = "unk", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """AUPC of a batch (functional twin of :class:`AUPC`)."""
    return _functional(AUPC, forward, inputs, explanation, modality, steps, removal, max_batch_size, reduction)


def au_mse(forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality, *, steps: int = 10,
           removal: str | float | None = "unk", max_batch_size: int = 256, reduction: Reduction = "mean") -> Tensor:
    """AU-MSE of a batch (functional twin of :class:`AUMSE`)."""
    return _functional(AUMSE, forward, inputs, explanation, modality, steps, removal, max_batch_size, reduction)


