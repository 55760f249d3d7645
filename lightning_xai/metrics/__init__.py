"""Faithfulness and plausibility metrics: torchmetrics ``Metric`` classes with a functional twin in the same file.

Every metric follows one contract (:class:`ExplanationMetric`): ``update(explanation, context)`` with a
:class:`ScoringContext`, ``requires``, ``check(modality)`` and a ``name``. Every perturbation metric goes through one
engine (:mod:`lightning_xai.metrics.engine`); :func:`evaluate_suite` runs several metrics on several methods' maps of
a batch with every common forward shared. Metrics are registered by name (one registration line here per metric).

Example:
    >>> sorted(list_metrics())  # doctest: +NORMALIZE_WHITESPACE
    ['agreement', 'aopc_comprehensiveness', 'aopc_sufficiency', 'area_between_curves', 'au_mse', 'auac', 'aupc',
     'deletion_auc', 'gain', 'insertion_auc', 'leave_one_out_tau', 'log_odds', 'plausibility', 'road',
     'taucorr_loo']
    >>> get_metric("deletion_auc", steps=5).steps
    5
"""

from __future__ import annotations

from typing import Any

from lightning_xai._registry import Registry
from lightning_xai.metrics._base import (
    ExplanationMetric,
    PerturbationMetric,
    SampleMeanMetric,
    ScoringContext,
)
from lightning_xai.metrics.agreement import MapAgreement, map_agreement, rank_correlation, topk_overlap
from lightning_xai.metrics.ali import AUAC, AUMSE, AUPC, au_mse, auac, aupc
from lightning_xai.metrics.aopc import (
    AOPCComprehensiveness,
    AOPCSufficiency,
    aopc_comprehensiveness,
    aopc_sufficiency,
)
from lightning_xai.metrics.area_between import AreaBetweenCurves, area_between_curves
from lightning_xai.metrics.deletion import DeletionAUC, deletion_auc
from lightning_xai.metrics.engine import (
    EmbeddingForward,
    evaluate_suite,
    forward_removals,
    perturbation_curves,
    perturbation_curves_multi,
    trapezoid_auc,
)
from lightning_xai.metrics.gain import RandomNormalisedGain, random_normalised_gain
from lightning_xai.metrics.insertion import InsertionAUC, insertion_auc
from lightning_xai.metrics.log_odds import LogOdds, log_odds
from lightning_xai.metrics.loo import LeaveOneOutTau, kendall_tau, leave_one_out_tau
from lightning_xai.metrics.plausibility import Plausibility, auprc, plausibility, token_f1, token_iou
from lightning_xai.metrics.road import ROAD, road

_REGISTRY: Registry[type[ExplanationMetric]] = Registry("metric")


def register_metric(
    cls: type[ExplanationMetric], *, name: str | None = None, aliases: tuple[str, ...] = ()
) -> type[ExplanationMetric]:
    """Register a metric class under ``name`` (default: its ``name`` class attribute) and ``aliases``.

    A class whose ``name`` is a property (it depends on the configuration) must be registered with ``name=``.

    Raises:
        ValueError: When a name is taken by another class, or the class has no plain ``name``.
    """
    return _REGISTRY.register(cls, name, aliases)


def list_metrics() -> dict[str, type[ExplanationMetric]]:
    """Registered metric names (aliases included) mapped to their classes."""
    return dict(sorted(_REGISTRY.items().items()))


def get_metric(name: str, **kwargs: Any) -> ExplanationMetric:
    """Instantiate a registered metric by name; unknown names raise with the valid ones listed.

    Example:
        >>> get_metric("deletion")
        Traceback (most recent call last):
        ...
        ValueError: Unknown metric 'deletion'. Registered metrics: agreement, aopc_comprehensiveness, ...
    """
    return _REGISTRY.get(name)(**kwargs)


def resolve_metrics(metrics: Any) -> list[Any]:
    """Metric instances from torchmetrics ``Metric`` instances or registered names (``"deletion_auc"``).

    Example:
        >>> [type(m).__name__ for m in resolve_metrics(["deletion_auc"])]
        ['DeletionAUC']
    """
    from torchmetrics import Metric

    items = [metrics] if isinstance(metrics, (str, Metric)) else list(metrics)
    resolved = []
    for item in items:
        if isinstance(item, str):
            resolved.append(get_metric(item))
        elif isinstance(item, Metric):
            resolved.append(item)
        else:
            raise TypeError(
                f"metrics must be torchmetrics Metric instances or registered names; got {type(item).__name__}. "
                f"Pass e.g. [DeletionAUC(), 'aopc_comprehensiveness'] (names: {', '.join(sorted(_REGISTRY.items()))})."
            )
    return resolved


register_metric(DeletionAUC)
register_metric(InsertionAUC)
register_metric(AOPCComprehensiveness)
register_metric(AOPCSufficiency)
register_metric(LogOdds)
register_metric(ROAD)
register_metric(AreaBetweenCurves)
register_metric(LeaveOneOutTau, aliases=("leave_one_out_tau",))
register_metric(AUPC)
register_metric(AUAC)
register_metric(AUMSE)
register_metric(Plausibility, name="plausibility")
register_metric(MapAgreement, name="agreement")
register_metric(RandomNormalisedGain, name="gain")

__all__ = [
    "AOPCComprehensiveness", "AOPCSufficiency", "AUAC", "AUMSE", "AUPC", "AreaBetweenCurves", "DeletionAUC",
    "EmbeddingForward", "ExplanationMetric", "InsertionAUC", "LeaveOneOutTau", "LogOdds", "MapAgreement",
    "PerturbationMetric", "Plausibility", "ROAD", "RandomNormalisedGain", "SampleMeanMetric", "ScoringContext",
    "aopc_comprehensiveness", "aopc_sufficiency", "area_between_curves", "au_mse", "auac", "aupc", "auprc",
    "deletion_auc", "evaluate_suite", "forward_removals", "get_metric", "insertion_auc", "kendall_tau",
    "leave_one_out_tau", "list_metrics", "log_odds", "map_agreement", "perturbation_curves",
    "perturbation_curves_multi", "plausibility", "random_normalised_gain", "rank_correlation", "register_metric",
    "resolve_metrics", "road", "token_f1", "token_iou", "topk_overlap", "trapezoid_auc",
]
