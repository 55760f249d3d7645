"""The metric contract: one ``update(explanation, context)`` for every metric, and the bases that implement it.

* :class:`ScoringContext` carries everything a metric may need besides the explanation (the model, the batch, the
  modality, a rationale, a second map, values already computed by a shared engine pass).
* :class:`ExplanationMetric` is the contract every metric of this package follows: ``update(explanation, context)``,
  ``requires`` (the context fields ``update`` reads), ``check(modality)`` (fail at setup, not mid-epoch), a ``name``
  and torchmetrics' constants as class attributes (or read-only properties where they follow the configuration).
* :class:`SampleMeanMetric` is the mean of per-sample values over an epoch: ``sample_values(explanation, context)``
  then accumulate.
* :class:`PerturbationMetric` computes its per-sample values from perturbed forwards: two hooks,
  ``removal_masks(explanation) -> [B, R, N]`` (row 0 unperturbed) and ``per_sample(logits [B, R, C], explanation)
  -> [B]``, which delegate to the private functions of the metric's file; the functional twin composes the same
  functions with :func:`~lightning_xai.metrics.engine.forward_removals` through :func:`engine_values`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics._perturbation import Score
from lightning_xai.metrics.engine import (
    DEFAULT_MAX_TOKENS,
    ForwardFn,
    evaluate_suite,
    forward_removals,
    resolve_modality,
)
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs

Reduction = Literal["mean", "none"]

#: The context fields a metric may require.
CONTEXT_FIELDS = frozenset({"forward", "inputs", "modality", "rationale", "reference"})


@dataclass(frozen=True)
class ScoringContext:
    """Everything a metric may need besides the explanation, for one batch.

    Attributes:
        forward: inputs -> logits, called under ``no_grad`` on a model in eval mode (an
            :class:`~lightning_xai.metrics.EmbeddingForward` for ``removal="zero_embedding"``).
        inputs: the unperturbed batch.
        modality: token bookkeeping and removal of the batch's modality.
        rationale: ``[B, N]`` bool ground-truth rationale over the model tokens (plausibility).
        reference: a second map of the same samples: the other method (agreement), the previous epoch's map
            (stability), or the random baseline (gain).
        values: ``[B]`` per-sample values of THIS metric, already computed by a shared engine pass
            (:func:`~lightning_xai.metrics.evaluate_suite`); perturbation metrics then skip the engine.
        reference_values: ``[B]`` (gain) the wrapped metric's per-sample values of ``reference``, already computed.
        logits: ``[B, C]`` logits of ``inputs`` from a forward of the same model in the same mode (the explanation
            pass's, :func:`~lightning_xai.scoring.reusable_logits`): the engine's unperturbed rows are taken from
            here instead of being forwarded again.

    Example:
        >>> ScoringContext().forward is None
        True
    """

    forward: ForwardFn | None = None
    inputs: ModelInputs | None = None
    modality: Modality | None = None
    rationale: Tensor | None = None
    reference: Explanation | None = None
    values: Tensor | None = None
    reference_values: Tensor | None = None
    logits: Tensor | None = None


def nan_mean(values: Tensor) -> Tensor:
    """Mean over the non-NaN entries (NaN when there is none).

    Example:
        >>> import torch
        >>> nan_mean(torch.tensor([1.0, float("nan"), 3.0])).item()
        2.0
    """
    kept = ~torch.isnan(values)
    return values[kept].mean() if kept.any() else torch.tensor(float("nan"), device=values.device)


def reduce(values: Tensor, reduction: Reduction) -> Tensor:
    """``"none"``: ``[B]`` as is; ``"mean"``: mean over non-NaN samples."""
    if reduction == "none":
        return values
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return nan_mean(values)


def check_arg(owner: str, arg: str, value: Any, valid: bool, expected: str) -> None:
    """Raise ``ValueError("owner(arg=...) must be <expected>, got <value>")`` unless ``valid``.

    Example:
        >>> check_arg("DeletionAUC", "steps", 0, False, ">= 1")
        Traceback (most recent call last):
        ...
        ValueError: DeletionAUC(steps=...) must be >= 1, got 0
    """
    if not valid:
        raise ValueError(f"{owner}({arg}=...) must be {expected}, got {value!r}")


def check_choice(owner: str, arg: str, value: Any, choices: Collection[Any]) -> None:
    """:func:`check_arg` for a value that must be one of ``choices``.

    Example:
        >>> check_choice("ROAD", "order", "up", ("morf", "lerf"))
        Traceback (most recent call last):
        ...
        ValueError: ROAD(order=...) must be 'morf' or 'lerf', got 'up'
    """
    names = [repr(c) for c in choices]
    expected = " or ".join(names) if len(names) <= 2 else f"one of {', '.join(names)}"
    check_arg(owner, arg, value, value in choices, expected)


def check_engine_args(owner: str, score: Score, max_batch_size: int, max_tokens: int | None = None) -> None:
    """The arguments every perturbation metric and functional shares."""
    check_choice(owner, "score", score, ("prob", "logit"))
    check_arg(owner, "max_batch_size", max_batch_size, max_batch_size >= 1, ">= 1")
    check_arg(owner, "max_tokens", max_tokens, max_tokens is None or max_tokens >= 1, ">= 1 or None")


@torch.no_grad()
def engine_values(
    forward: ForwardFn,
    inputs: ModelInputs,
    explanation: Explanation,
    modality: Modality,
    masks: Tensor,
    per_sample: Callable[[Tensor], Tensor],
    *,
    removal: str | float | None,
    max_batch_size: int,
    reduction: Reduction,
) -> Tensor:
    """A perturbation functional: the logits of ``masks`` (one engine pass), ``per_sample`` of them, reduced.

    Args:
        forward: inputs -> logits.
        inputs: the unperturbed batch.
        explanation: the maps scored (``masks`` were built from them).
        modality: how tokens are removed; ``removal`` picks a variant of it.
        masks: ``[B, R, N]`` removal masks (row 0 unperturbed) from the metric's ``_<metric>_masks``.
        per_sample: ``[B, R, C]`` logits -> ``[B]`` values, the metric's ``_<metric>_values``.
        removal: how tokens are removed (None: the modality's own way).
        max_batch_size: rows per forward.
        reduction: ``"mean"`` over the scored samples or ``"none"``.
    """
    logits = forward_removals(forward, inputs, resolve_modality(modality, removal), masks,
                              max_batch_size=max_batch_size, max_tokens=DEFAULT_MAX_TOKENS)
    return reduce(per_sample(logits.to(explanation.relevance.device)), reduction)


class ExplanationMetric(Metric):
    """The contract of every metric of this package (a torchmetrics :class:`~torchmetrics.Metric`).

    * ``update(explanation, context)``: score one batch of maps (``context``: a :class:`ScoringContext`).
    * ``requires``: the context fields ``update`` reads (from ``CONTEXT_FIELDS``); a missing one raises a
      ``ValueError`` naming the metric and the field.
    * ``check(modality)``: raises a :class:`~lightning_xai.errors.LightningXAIError` at setup when the metric cannot
      score that modality with its configuration.
    * ``name`` (the log key), ``higher_is_better``, ``is_differentiable`` and ``full_state_update``: class attributes,
      or read-only properties where they follow the configuration (never written per instance).
    """

    name: str
    requires: ClassVar[frozenset[str]] = frozenset()
    is_differentiable = False
    full_state_update = False

    def update(self, explanation: Explanation, context: ScoringContext) -> None:
        """Score one batch of explanations."""
        raise NotImplementedError

    def check(self, modality: Modality) -> None:
        """Raise a :class:`~lightning_xai.errors.LightningXAIError` if this metric cannot score ``modality``."""

    def _require(self, context: ScoringContext, *fields: str) -> None:
        missing = [field for field in fields if getattr(context, field) is None]
        if missing:
            raise ValueError(
                f"{type(self).__name__} ({self.name!r}) needs {', '.join(f'context.{f}' for f in missing)} to score "
                f"a batch; pass {'them' if len(missing) > 1 else 'it'} in the ScoringContext (this metric requires "
                f"{sorted(self.requires)})."
            )


class SampleMeanMetric(ExplanationMetric):
    """Mean of per-sample values over an epoch, DDP-synced through sum states (NaN samples skipped).

    Subclasses implement :meth:`sample_values`; ``update`` accumulates its result.
    """

    name = "sample_mean"

    value_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("value_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def sample_values(self, explanation: Explanation, context: ScoringContext) -> Tensor | None:
        """``[B]`` per-sample values of one batch (NaN = skipped sample), or None when the batch cannot be scored."""
        raise NotImplementedError

    def update(self, explanation: Explanation, context: ScoringContext) -> None:
        """Accumulate :meth:`sample_values` of one batch (a batch it returns None for is skipped)."""
        values = self.sample_values(explanation, context)
        if values is not None:
            self.update_values(values)

    def update_values(self, values: Tensor) -> None:
        """Accumulate per-sample values (NaN = skipped)."""
        kept = ~torch.isnan(values)
        self.value_sum += values[kept].double().sum().to(self.value_sum.device)
        self.count += kept.sum().to(self.count.device)

    def compute(self) -> Tensor:
        """Mean over every scored sample (NaN when none was scored)."""
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.value_sum / self.count).float()


class PerturbationMetric(SampleMeanMetric):
    """A faithfulness metric computed from perturbed forwards (see the module docstring).

    ``update(explanation, context)`` reads ``context.forward``, ``context.inputs`` and ``context.modality``, or only
    ``context.values`` when a shared engine pass (:func:`~lightning_xai.metrics.evaluate_suite`) already computed
    them.

    Args:
        score: ``"prob"`` or ``"logit"`` of the explained class, where the metric uses one.
        removal: how tokens are removed, overriding the modality's own setting (text: ``"replace"``, ``"mask"``,
            ``"unk"``, ``"pad"``, ``"attention"``, ``"delete"``, ``"retokenize"``, ``"zero_embedding"``; vision:
            ``"zero"``, ``"mean"``, ``"blur"``, ``"road"`` or a number); None keeps the modality's.
        max_batch_size: rows per perturbation forward (memory budget).
        max_tokens: rows x tokens per perturbation forward for text (memory budget; None: rows only).
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forward", "inputs", "modality"})

    def __init__(
        self,
        score: Score = "prob",
        removal: str | float | None = None,
        max_batch_size: int = 256,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_engine_args(type(self).__name__, score, max_batch_size, max_tokens)
        self.score = score
        self.removal = removal
        self.max_batch_size = max_batch_size
        self.max_tokens = max_tokens

    def removal_masks(self, explanation: Explanation) -> Tensor:
        """``[B, R, N]`` bool masks; row 0 must be the unperturbed input (all False)."""
        raise NotImplementedError

    def per_sample(self, logits: Tensor, explanation: Explanation) -> Tensor:
        """``[B]`` values from the ``[B, R, C]`` logits of :meth:`removal_masks` (NaN = skipped)."""
        raise NotImplementedError

    def check(self, modality: Modality) -> None:
        """Raise a :class:`~lightning_xai.errors.LightningXAIError` if ``modality`` cannot remove tokens this way."""
        try:
            resolve_modality(modality, self.removal)
        except (ValueError, LightningXAIError) as error:
            cls = type(self).__name__
            raise LightningXAIError(
                f"{cls} ({self.name!r}) cannot score {modality.name} inputs with removal={self.removal!r}: {error} "
                f"To use it on {modality.name}, pass a removal this modality supports to {cls}(removal=...), or "
                f"leave this metric out."
            ) from error

    def sample_values(self, explanation: Explanation, context: ScoringContext) -> Tensor:
        """``context.values`` when given, else one engine pass over ``context.forward/inputs/modality``."""
        if context.values is not None:
            if context.values.shape != explanation.target.shape:
                raise ValueError(f"{type(self).__name__}: context.values must have shape "
                                 f"{tuple(explanation.target.shape)} (one value per sample), got "
                                 f"{tuple(context.values.shape)}")
            return context.values
        self._require(context, "forward", "inputs", "modality")
        assert context.forward is not None and context.inputs is not None and context.modality is not None
        return evaluate_suite(context.forward, context.inputs, {explanation.method: explanation}, context.modality,
                              [self], unperturbed=context.logits)[0][explanation.method]
