"""Explainers: one file per method plus one registration line here.

Example:
    >>> sorted(list_explainers())
    ['attn_lrp', 'cp_lrp', 'grad_sam', 'random']
"""

from __future__ import annotations

from typing import Any

from lightning_xai.explainers.base import Explainer, ForwardPass
from lightning_xai.explainers.grad_sam import GradSAM, grad_sam
from lightning_xai.explainers.lrp import AttnLRP, ConservativeLRP, attn_lrp, cp_lrp
from lightning_xai.explainers.random import Random

_REGISTRY: dict[str, type[Explainer]] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Register an explainer class under ``cls.name`` (usable as a class decorator)."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"An explainer named {cls.name!r} is already registered ({existing.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def list_explainers() -> dict[str, frozenset[str]]:
    """Registered explainer names mapped to what each needs from the forward pass."""
    return {name: cls.needs for name, cls in sorted(_REGISTRY.items())}


def get_explainer(name: str, **kwargs: Any) -> Explainer:
    """Instantiate a registered explainer by name; unknown names raise with the valid ones listed."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown explainer {name!r}. Registered explainers: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


register_explainer(GradSAM)
register_explainer(Random)
register_explainer(ConservativeLRP)
register_explainer(AttnLRP)

__all__ = [
    "AttnLRP",
    "ConservativeLRP",
    "Explainer",
    "ForwardPass",
    "GradSAM",
    "Random",
    "attn_lrp",
    "cp_lrp",
    "get_explainer",
    "grad_sam",
    "list_explainers",
    "register_explainer",
]
