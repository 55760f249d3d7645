"""Explainers: one file per method plus one registration line here.

Example:
    >>> sorted(list_explainers())  # doctest: +NORMALIZE_WHITESPACE
    ['attention_shapley', 'attn_lrp', 'cp_lrp', 'gae', 'grad_sam', 'gradient_x_input', 'integrated_gradients',
     'legrad', 'random', 'raw_attention', 'rollout']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_xai._registry import Registry
from lightning_xai.explainers.attention import RawAttention, Rollout, raw_attention, rollout
from lightning_xai.explainers.attention_shapley import AttentionShapley, attention_shapley
from lightning_xai.explainers.base import Explainer, ForwardPass
from lightning_xai.explainers.gae import GAE, gae
from lightning_xai.explainers.grad_sam import GradSAM, grad_sam, streamed_grad_sam
from lightning_xai.explainers.gradients import (
    GradientXInput,
    IntegratedGradients,
    gradient_x_input,
    integrated_gradients,
)
from lightning_xai.explainers.legrad import LeGrad, legrad
from lightning_xai.explainers.lrp import AttnLRP, ConservativeLRP, attn_lrp, cp_lrp
from lightning_xai.explainers.random import Random

_REGISTRY: Registry[type[Explainer]] = Registry("explainer")


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Register an explainer class under ``cls.name`` (usable as a class decorator)."""
    return _REGISTRY.register(cls)


def list_explainers() -> dict[str, frozenset[str]]:
    """Registered explainer names mapped to what each needs from the model's family and forward pass."""
    return {name: cls.needs for name, cls in sorted(_REGISTRY.items().items())}


def get_explainer(name: str, **kwargs: Any) -> Explainer:
    """Instantiate a registered explainer by name; unknown names raise with the valid ones listed."""
    return _REGISTRY.get(name)(**kwargs)


def resolve_explainers(explainers: Explainer | str | Sequence[Explainer | str]) -> list[Explainer]:
    """Explainer instances from instances or registered names (``"grad_sam"``), with what to pass otherwise.

    Example:
        >>> [e.name for e in resolve_explainers(["grad_sam", Random()])]
        ['grad_sam', 'random']
    """
    items = [explainers] if isinstance(explainers, (str, Explainer)) else list(explainers)
    resolved = []
    for item in items:
        if isinstance(item, str):
            resolved.append(get_explainer(item))
        elif isinstance(item, Explainer):
            resolved.append(item)
        else:
            names = ", ".join(sorted(list_explainers()))
            raise TypeError(
                f"explainers must be lightning_xai Explainer instances or registered names; got "
                f"{type(item).__name__}. Pass e.g. [GradSAM(), 'random'] (names: {names})."
            )
    return resolved


register_explainer(GradSAM)
register_explainer(Random)
register_explainer(ConservativeLRP)
register_explainer(AttnLRP)
register_explainer(LeGrad)
register_explainer(RawAttention)
register_explainer(Rollout)
register_explainer(GAE)
register_explainer(GradientXInput)
register_explainer(IntegratedGradients)
register_explainer(AttentionShapley)

__all__ = [
    "GAE",
    "AttentionShapley",
    "AttnLRP",
    "ConservativeLRP",
    "Explainer",
    "ForwardPass",
    "GradSAM",
    "GradientXInput",
    "IntegratedGradients",
    "LeGrad",
    "Random",
    "RawAttention",
    "Rollout",
    "attention_shapley",
    "attn_lrp",
    "cp_lrp",
    "gae",
    "get_explainer",
    "grad_sam",
    "gradient_x_input",
    "integrated_gradients",
    "legrad",
    "list_explainers",
    "raw_attention",
    "register_explainer",
    "resolve_explainers",
    "rollout",
    "streamed_grad_sam",
]
