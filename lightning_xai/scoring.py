"""The scoreboard: every metric of every method, plus gain over random, stability and agreement, as Metrics.

Everything is a torchmetrics ``Metric`` (sum states), so a DDP run reduces by torchmetrics' own sync and every rank
logs what a single process would on the union of the shards. Per chunk of probe samples:

1. the perturbation metrics of every method share ONE deduplicated engine pass
   (:func:`~lightning_xai.metrics.evaluate_suite`; out of memory halves its rows and tokens; any other failure
   falls back to scoring each metric on its own, so the failure is reported against the metric that caused it);
2. the other metrics (plausibility) score each method's maps;
3. each metric's per-sample values of each method also feed its gain over the ``Random`` baseline
   (:class:`~lightning_xai.metrics.RandomNormalisedGain`), with no extra forward;
4. every pair of methods feeds an agreement (:class:`~lightning_xai.metrics.MapAgreement`, Spearman), on the
   samples both maps score.

Degenerate maps (all zero, or one-hot, see :func:`degenerate_rows`) are counted here (``degenerate_samples``) and
reach the metrics without content tokens, so every metric skips them instead of scoring them as valid.

After the last chunk, each method's maps of the whole probe set are compared with the previous validation's
(stability, the same metric with the previous map as reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.aggregation import SumMetric

from lightning_xai._runtime import ErrorPolicy, halved, is_out_of_memory
from lightning_xai.keys import LogKeys
from lightning_xai.metrics import MapAgreement, PerturbationMetric, RandomNormalisedGain, ScoringContext, evaluate_suite
from lightning_xai.types import Explanation

#: method -> number of probe samples it lost at this validation.
Skipped = dict[str, int]


def degenerate_rows(explanation: Explanation) -> Tensor:
    """``[B]`` bool: samples whose map ranks nothing: all zero on the content tokens, or one-hot on one of several.

    A one-token sample is not degenerate (one-hot is all it can be); a sample without content tokens neither.

    Example:
        >>> import torch
        >>> valid = torch.ones(3, 3, dtype=torch.bool)
        >>> relevance = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.7, 0.0], [0.1, 0.7, 0.0]])
        >>> degenerate_rows(Explanation("m", relevance, valid, ~valid, torch.zeros(3))).tolist()
        [True, True, False]
    """
    content = explanation.content_mask
    nonzero = ((explanation.relevance != 0) & content).sum(dim=1)
    tokens = content.sum(dim=1)
    return (tokens > 0) & ((nonzero == 0) | ((nonzero == 1) & (tokens >= 2)))


def reusable_logits(model: torch.nn.Module, maps: Mapping[str, Explanation]) -> Tensor | None:
    """The explanation forward's logits, for the metrics' unperturbed rows, when a metric forward would give them.

    :func:`~lightning_xai.explain` runs one forward of the model on the chunk in eval mode; the perturbation engine
    would run another on the same inputs (no grad, the model's own attention backend). In float32 both give the
    same logits up to float noise (about 1e-7 on the probabilities), so the second is skipped. Under autocast, with
    16-bit weights or with TF32 matmuls (``torch.get_float32_matmul_precision() != "highest"``) the two attention
    backends differ by more than that: None (the engine forwards the row).

    Example:
        >>> import torch
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> from lightning_xai import explain
        >>> model = tiny_bert()
        >>> maps = explain(model, tiny_text_batch(), ["grad_sam", "random"], modality=tiny_text_modality())
        >>> reusable_logits(model, maps) is maps["grad_sam"].logits
        True
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     reusable_logits(model, maps) is None
        True
    """
    shared = {id(e.logits) for e in maps.values()}
    logits = next(iter(maps.values())).logits if len(shared) == 1 else None
    if logits is None or _autocast_active() or torch.get_float32_matmul_precision() != "highest":
        return None
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
        return None
    return logits


def _autocast_active() -> bool:
    devices = ["cpu", "cuda", *(("mps",) if torch.backends.mps.is_available() else ())]
    return any(torch.is_autocast_enabled(device) for device in devices)


def without_rows(explanation: Explanation, rows: Tensor) -> Explanation:
    """``explanation`` with samples ``rows`` (``[B]`` bool) holding no content tokens: every metric skips them."""
    special = explanation.special_mask
    return replace(explanation, special_mask=special | rows.to(special.device)[:, None])


def metric_name(metric: Metric) -> str:
    """The metric's log name (``metric.name``, else its class name in snake_case).

    Example:
        >>> from torchmetrics.aggregation import MeanMetric
        >>> metric_name(MeanMetric())
        'mean_metric'
    """
    name = getattr(metric, "name", None)
    if isinstance(name, str):
        return name
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in type(metric).__name__).lstrip("_")


class Scoreboard:
    """Metric states of one run: ``(method, metric)`` clones, gains, agreement pairs and stability.

    Args:
        methods: the explainers' names, in order (the order of every reduction under DDP).
        metrics: metric templates, cloned per method; each is updated with ``update(explanation, context)``.
        keys: the run's log keys.
        policy: what to do when a metric fails.
        baseline: name of the random baseline method, whose maps every other method's metrics are compared with
            (``<metric>_gain_vs_random``); None for no gains.
    """

    def __init__(
        self,
        methods: Sequence[str],
        metrics: Sequence[Metric],
        keys: LogKeys,
        policy: ErrorPolicy,
        baseline: str | None = None,
    ) -> None:
        self.methods = list(methods)
        self.templates = list(metrics)
        self.keys = keys
        self.policy = policy
        self.baseline = baseline if baseline in self.methods else None
        self.scores: dict[tuple[str, str], Metric] = {
            (method, metric_name(m)): m.clone() for method in self.methods for m in self.templates
        }
        self.gains: dict[tuple[str, str], Metric] = {
            (method, metric_name(m)): RandomNormalisedGain(m)
            for method in self.methods
            for m in self.templates
            if self.baseline is not None and method != self.baseline and _has_sample_values(m)
        }
        self.agreement: dict[tuple[str, str], MapAgreement] = {
            (a, b): MapAgreement() for i, a in enumerate(self.methods) for b in self.methods[i + 1 :]
        }
        self.stability: dict[str, MapAgreement] = {method: MapAgreement() for method in self.methods}
        self.degenerate: dict[str, SumMetric] = {method: SumMetric() for method in self.methods}
        self._suite_limits: tuple[int, int | None] | None = None  # shared pass: rows, tokens (halved on OOM)

    def all_metrics(self) -> list[Metric]:
        """Every metric state, in the fixed order every rank computes them."""
        return [*self.scores.values(), *self.gains.values(), *self.stability.values(), *self.agreement.values(),
                *self.degenerate.values()]

    def to(self, device: torch.device) -> Scoreboard:
        """Move every metric state to ``device`` (the collective's device under DDP)."""
        for metric in self.all_metrics():
            metric.to(device)
        return self

    # --------------------------------------------------------------------------------------------- updates

    def update(
        self, maps: Mapping[str, Explanation], context: ScoringContext, skipped: Skipped
    ) -> dict[str, Explanation]:
        """Score one chunk: every metric of every method, gains and agreement (see the module docstring).

        Args:
            maps: method -> the chunk's maps.
            context: forward, inputs, modality and rationale of the chunk.
            skipped: method -> lost samples; a failing metric adds the chunk's rows to its method's count.

        Returns:
            The maps as scored: degenerate samples hold no content tokens.
        """
        if not maps:
            return {}
        degenerate = {method: degenerate_rows(explanation) for method, explanation in maps.items()}
        for method, rows in degenerate.items():
            self.degenerate[method].update(rows.sum().float())
        maps = {method: without_rows(explanation, degenerate[method]) for method, explanation in maps.items()}
        values = self._shared_values(maps, context)
        for template in self.templates:
            name = metric_name(template)
            for method, explanation in maps.items():
                metric = self.scores.get((method, name))
                if metric is None:
                    continue
                method_values = values.get((method, name))
                if method_values is None and (method, name) not in values:
                    method_values = self._own_values(metric, name, method, explanation, context, skipped)
                    values[(method, name)] = method_values
                if method_values is not None:
                    metric.update(explanation, replace(context, values=method_values))
        self._update_gains(maps, context, values)
        for (a, b), agreement in self.agreement.items():
            if a in maps and b in maps:  # the samples both maps score
                agreement.update(without_rows(maps[a], ~maps[b].content_mask.any(dim=1)),
                                 ScoringContext(reference=maps[b]))
        return maps

    def update_stability(
        self, current: Mapping[str, Explanation], previous: Mapping[str, Explanation]
    ) -> None:
        """Compare each method's maps of the whole probe set with the previous validation's (same samples)."""
        for method, stability in self.stability.items():
            now, before = current.get(method), previous.get(method)
            if now is not None and before is not None and now.relevance.shape == before.relevance.shape:
                stability.update(now, ScoringContext(reference=before))

    def _shared_values(
        self, maps: Mapping[str, Explanation], context: ScoringContext
    ) -> dict[tuple[str, str], Tensor | None]:
        """Per-sample values of every perturbation metric of every method from one :func:`evaluate_suite` pass."""
        shared = [m for m in self.templates if isinstance(m, PerturbationMetric)]
        if not shared:
            return {}
        if self._suite_limits is None:
            tokens = [m.max_tokens for m in shared if m.max_tokens is not None]
            self._suite_limits = (min(m.max_batch_size for m in shared), min(tokens) if tokens else None)
        while True:
            rows, tokens = self._suite_limits
            try:
                suite = evaluate_suite(context.forward, context.inputs, maps, context.modality, shared,
                                       max_batch_size=rows, max_tokens=tokens, unperturbed=context.logits)
                break
            except Exception as error:
                if is_out_of_memory(error) and (rows > 1 or (tokens or 1) > 1):
                    self._suite_limits = halved(rows, tokens)
                    self.policy.warn_once("oom-metric", "out of memory in the perturbation forwards; retrying with "
                                          f"max_batch_size={self._suite_limits[0]}, max_tokens={self._suite_limits[1]}")
                    continue
                return {}  # each metric is scored on its own: its failure is then reported against it
        return {
            (method, metric_name(template)): method_values
            for template, per_method in zip(shared, suite, strict=True)
            for method, method_values in per_method.items()
        }

    def _own_values(
        self,
        metric: Metric,
        name: str,
        method: str,
        explanation: Explanation,
        context: ScoringContext,
        skipped: Skipped,
    ) -> Tensor | None:
        """One metric's per-sample values of one method's maps, halving its chunks and retrying on out-of-memory."""
        while True:
            try:
                return metric.sample_values(explanation, context)
            except Exception as error:
                limit = getattr(metric, "max_batch_size", None)
                if is_out_of_memory(error) and isinstance(limit, int) and limit > 1:
                    tokens = getattr(metric, "max_tokens", None)
                    metric.max_batch_size, tokens = halved(limit, tokens if isinstance(tokens, int) else None)
                    if tokens is not None:  # the token bound halves with the rows
                        metric.max_tokens = tokens
                    self.policy.warn_once("oom-metric", f"out of memory in metric {name!r}; retrying with "
                                          f"max_batch_size={metric.max_batch_size}, max_tokens={tokens}")
                    continue
                self.policy.handle(f"metric {name!r} on {method!r}", error)
                rows = explanation.relevance.shape[0]
                skipped[f"{method}/{name}"] = skipped.get(f"{method}/{name}", 0) + rows
                return None

    def _update_gains(
        self, maps: Mapping[str, Explanation], context: ScoringContext, values: Mapping[tuple[str, str], Any]
    ) -> None:
        """Feed each metric's values of a method and of the baseline, on the same samples, to its gain."""
        if self.baseline is None or self.baseline not in maps:
            return
        for (method, name), gain in self.gains.items():
            method_values, random_values = values.get((method, name)), values.get((self.baseline, name))
            if method in maps and method_values is not None and random_values is not None:
                gain.update(maps[method], replace(context, reference=maps[self.baseline], values=method_values,
                                                  reference_values=random_values))

    # --------------------------------------------------------------------------------------------- results

    def compute(self, distributed: bool) -> tuple[dict[str, Tensor], dict[str, bool]]:
        """Every value (NaN where nothing was scored) and its direction, then reset every state.

        Without DDP, metrics never updated are left out (torchmetrics would warn); under DDP every rank computes
        every metric in the same order, since each ``compute`` is a collective.
        """
        values: dict[str, Tensor] = {}
        directions: dict[str, bool] = {}
        entries: list[tuple[str, Metric, bool, str]] = [
            *((self.keys.score(method, name), m, _direction(m), f"metric {name!r} on {method!r}")
              for (method, name), m in self.scores.items()),
            *((self.keys.gain(method, name), m, True, f"the gain of {name!r} on {method!r}")
              for (method, name), m in self.gains.items()),
            *((self.keys.stability(method), m, True, f"the stability of {method!r}")
              for method, m in self.stability.items()),
            *((self.keys.agreement(a, b), m, True, f"the agreement of {a!r} and {b!r}")
              for (a, b), m in self.agreement.items()),
            *((self.keys.degenerate(method), m, False, f"the degenerate count of {method!r}")
              for method, m in self.degenerate.items()),
        ]
        for key, metric, higher_is_better, where in entries:
            directions[key] = higher_is_better
            try:
                if metric.update_count == 0 and not distributed:
                    continue
                values[key] = metric.compute().detach().float()
            except Exception as error:
                self.policy.handle(where, error)
            finally:
                metric.reset()
        for method in self.degenerate:  # a count is logged only when something was degenerate
            key = self.keys.degenerate(method)
            if key in values and float(values[key]) == 0:
                del values[key]
        return values, directions


def _direction(metric: Metric) -> bool:
    return bool(getattr(metric, "higher_is_better", False))


def _has_sample_values(metric: Metric) -> bool:
    return callable(getattr(metric, "sample_values", None))
