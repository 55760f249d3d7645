"""Capture: how attention is recorded for ONE explanation pass (the mechanisms model families choose from).

Which capture a model gets is its family's choice (:attr:`lightning_xai.families.ModelFamily.capture_class`);
:func:`resolve_capture` is the capture of the model's family.
"""

from __future__ import annotations

import warnings

from torch import nn

from lightning_xai.capture.base import AttentionCapture, AttentionRecord, eager_forward, eval_mode
from lightning_xai.capture.hf import HFAttentionCapture, attention_implementation, register_attention_function


def resolve_capture(model: nn.Module) -> AttentionCapture:
    """The attention capture of ``model``'s family; raises :class:`UnsupportedModelError` listing the families.

    Example:
        >>> import torch
        >>> resolve_capture(torch.nn.Linear(2, 2))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lightning_xai.errors.UnsupportedModelError: ...
    """
    from lightning_xai.families import resolve_family  # families build on the captures

    return resolve_family(model).capture()


def supported_families() -> list[str]:
    """Names and examples of every registered model family, for error messages."""
    from lightning_xai.families import list_families

    return [f"{cls.name} ({cls.examples})" for cls in list_families().values()]


def register_capture(cls: type[AttentionCapture]) -> type[AttentionCapture]:
    """Deprecated: a capture is chosen by a model family (``capture_class``), registered with ``register_family``."""
    warnings.warn(
        "register_capture is deprecated: set `capture_class` on a lightning_xai.families.ModelFamily subclass and "
        "register the family with lightning_xai.families.register_family.",
        DeprecationWarning,
        stacklevel=2,
    )
    return cls


__all__ = [
    "AttentionCapture",
    "AttentionRecord",
    "HFAttentionCapture",
    "attention_implementation",
    "eager_forward",
    "eval_mode",
    "register_attention_function",
    "register_capture",
    "resolve_capture",
    "supported_families",
]
