"""Random-normalised faithfulness gain: how much better than the random explainer, as one number.

``gain = (m_method − m_random) / |m_random|`` for a higher-is-better metric and
``gain = (m_random − m_method) / |m_random|`` for a lower-is-better one, so that **gain > 0 always means better than
chance** (0 = as good as random, 1 = the metric improved by 100% of the random value). ``m`` are epoch means of the
wrapped metric on the same samples; NaN when ``m_random`` is 0 or NaN. Range ``(-inf, +inf)``, higher is better.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_xai.metrics._base import PerturbationMetric, evaluate_suite
from lightning_xai.metrics._perturbation import ForwardFn
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs


def random_normalised_gain(method_value: Tensor | float, random_value: Tensor | float,
                           higher_is_better: bool) -> Tensor:
    """Gain of a metric value over the random explainer's (positive = better than chance).

    Example:
        >>> round(float(random_normalised_gain(0.2, 0.5, higher_is_better=False)), 4)  # deletion 0.2, random 0.5
        0.6
        >>> round(float(random_normalised_gain(0.3, 0.2, higher_is_better=True)), 4)
        0.5
    """
    m = torch.as_tensor(method_value, dtype=torch.float64)
    r = torch.as_tensor(random_value, dtype=torch.float64)
    diff = m - r if higher_is_better else r - m
    return torch.where(r.abs() > 0, diff / r.abs(), torch.full_like(r, math.nan)).float()


class RandomNormalisedGain(Metric):
    """Gain of a perturbation metric over a random map of the same samples (higher is better).

    ``update(forward, inputs, explanation, modality, random_explanation)``: both maps are scored in one shared
    engine pass; the gain is computed on the two epoch means.

    Args:
        metric: the wrapped metric (its configuration is used; its own state is not touched).
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    method_sum: Tensor
    random_sum: Tensor
    count: Tensor

    def __init__(self, metric: PerturbationMetric, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = metric
        self.__dict__["name"] = f"{metric.name}_gain"
        for state in ("method_sum", "random_sum"):
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, forward: ForwardFn, inputs: ModelInputs, explanation: Explanation, modality: Modality,
               random_explanation: Explanation) -> None:  # type: ignore[override]
        """Score the method's and the random maps of one batch (samples NaN for either are skipped)."""
        values = evaluate_suite(forward, inputs, {"method": explanation, "random": random_explanation}, modality,
                                [self.metric])[0]
        kept = ~(torch.isnan(values["method"]) | torch.isnan(values["random"]))
        self.method_sum += values["method"][kept].double().sum().to(self.method_sum.device)
        self.random_sum += values["random"][kept].double().sum().to(self.random_sum.device)
        self.count += kept.sum().to(self.count.device)

    def compute(self) -> Tensor:
        """Gain of the epoch means."""
        if self.count == 0:
            return torch.tensor(math.nan)
        return random_normalised_gain(self.method_sum / self.count, self.random_sum / self.count,
                                      bool(self.metric.higher_is_better))
