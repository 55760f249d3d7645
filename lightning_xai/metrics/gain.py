"""Random-normalised faithfulness gain: how much better than the random explainer, as one number.

``gain = (m_method − m_random) / |m_random|`` for a higher-is-better metric and
``gain = (m_random − m_method) / |m_random|`` for a lower-is-better one, so that **gain > 0 always means better than
chance** (0 = as good as random, 1 = the metric improved by 100% of the random value). ``m`` are epoch means of the
wrapped metric on the same samples (a sample skipped on either side is dropped from both); NaN when ``m_random`` is 0
or NaN. Range ``(-inf, +inf)``, higher is better.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from lightning_xai.metrics._base import ExplanationMetric, PerturbationMetric, SampleMeanMetric, ScoringContext
from lightning_xai.metrics.engine import evaluate_suite
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation


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


class RandomNormalisedGain(ExplanationMetric):
    """Gain of a metric over a random map of the same samples (higher is better).

    ``update(explanation, context)``: ``context.reference`` is the random map. The wrapped metric's per-sample values
    of both maps come from ``context.values`` / ``context.reference_values`` when given (a shared engine pass already
    has them); otherwise they are computed, both maps of a perturbation metric in ONE shared engine pass. The gain is
    computed on the two epoch means over the samples scored on both sides.

    The gain has no per-sample value (it is a ratio of means): :meth:`paired_values` gives the two per-sample inputs.

    Args:
        metric: the wrapped metric (any :class:`~lightning_xai.metrics.SampleMeanMetric` of this package: the
            perturbation metrics and plausibility); its configuration is used, its own state is not touched.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_xai.metrics import DeletionAUC, ScoringContext
        >>> content = torch.ones(2, 3, dtype=torch.bool)
        >>> exp = Explanation("m", torch.rand(2, 3), content, ~content, torch.tensor([0, 1]))
        >>> gain = RandomNormalisedGain(DeletionAUC())
        >>> random = Explanation("random", torch.rand(2, 3), content, ~content, torch.tensor([0, 1]))
        >>> gain.update(exp, ScoringContext(reference=random, values=torch.tensor([0.2, 0.4]),
        ...                                 reference_values=torch.tensor([0.5, 0.5])))
        >>> gain.name, round(float(gain.compute()), 4)  # (0.5 - 0.3) / 0.5
        ('deletion_auc_gain', 0.4)
    """

    higher_is_better = True

    method_sum: Tensor
    random_sum: Tensor
    count: Tensor

    def __init__(self, metric: SampleMeanMetric, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(metric, SampleMeanMetric):
            raise TypeError(f"RandomNormalisedGain(metric=...) needs a metric with per-sample values (a "
                            f"SampleMeanMetric of lightning_xai.metrics), got {type(metric).__name__}")
        self.metric = metric
        for state in ("method_sum", "random_sum"):
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def name(self) -> str:  # type: ignore[override]
        """Log-key name: ``"<wrapped name>_gain"``."""
        return f"{self.metric.name}_gain"

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        """``reference`` (the random map) and whatever the wrapped metric requires."""
        return frozenset({"reference"}) | self.metric.requires

    def check(self, modality: Modality) -> None:
        """The wrapped metric's check."""
        self.metric.check(modality)

    def paired_values(self, explanation: Explanation, context: ScoringContext) -> tuple[Tensor, Tensor] | None:
        """``([B] method values, [B] random values)`` of the wrapped metric, or None when it skips the batch."""
        self._require(context, "reference")
        assert context.reference is not None
        method, random = context.values, context.reference_values
        if (method is None or random is None) and isinstance(self.metric, PerturbationMetric):
            self._require(context, "forward", "inputs", "modality")
        if method is None and random is None and isinstance(self.metric, PerturbationMetric):
            assert context.forward is not None and context.inputs is not None and context.modality is not None
            out = evaluate_suite(context.forward, context.inputs, {"method": explanation, "random": context.reference},
                                 context.modality, [self.metric])[0]
            return out["method"], out["random"]
        plain = dataclasses.replace(context, values=None, reference_values=None)
        if method is None:
            method = self.metric.sample_values(explanation, plain)
        if random is None:
            random = self.metric.sample_values(context.reference, plain)
        return None if method is None or random is None else (method, random)

    def update(self, explanation: Explanation, context: ScoringContext) -> None:
        """Accumulate the method's and the random map's values of one batch (samples NaN on either side skipped)."""
        pair = self.paired_values(explanation, context)
        if pair is None:
            return
        method, random = pair
        kept = ~(torch.isnan(method) | torch.isnan(random))
        self.method_sum += method[kept].double().sum().to(self.method_sum.device)
        self.random_sum += random[kept].double().sum().to(self.random_sum.device)
        self.count += kept.sum().to(self.count.device)

    def compute(self) -> Tensor:
        """Gain of the epoch means."""
        if self.count == 0:
            return torch.tensor(math.nan)
        return random_normalised_gain(self.method_sum / self.count, self.random_sum / self.count,
                                      bool(self.metric.higher_is_better))
