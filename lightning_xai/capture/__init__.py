"""Capture families: how attention is recorded for one explanation pass.

Add a family with one file defining an :class:`AttentionCapture` subclass plus one :func:`register_capture` line.
"""

from __future__ import annotations

from torch import nn

from lightning_xai.capture.base import AttentionCapture, AttentionRecord, eval_mode
from lightning_xai.capture.hf import HFAttentionCapture
from lightning_xai.errors import UnsupportedModelError

_FAMILIES: list[type[AttentionCapture]] = []


def register_capture(cls: type[AttentionCapture]) -> type[AttentionCapture]:
    """Register a capture family (usable as a class decorator)."""
    if cls not in _FAMILIES:
        _FAMILIES.append(cls)
    return cls


def supported_families() -> list[str]:
    """Names and examples of every registered family, for error messages."""
    return [f"{cls.family} ({cls.examples})" for cls in _FAMILIES]


def resolve_capture(model: nn.Module) -> AttentionCapture:
    """Return the capture for ``model`` or raise :class:`UnsupportedModelError` listing what is supported.

    Example:
        >>> import torch
        >>> resolve_capture(torch.nn.Linear(2, 2))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lightning_xai.errors.UnsupportedModelError: ...
    """
    for cls in _FAMILIES:
        if cls.supports(model):
            return cls(model)
    families = "\n  - ".join(supported_families())
    raise UnsupportedModelError(
        f"lightning_xai cannot record the attention of a {type(model).__module__}.{type(model).__qualname__}.\n"
        f"Supported model families:\n  - {families}\n"
        "What to do: pass `model_getter=` to ExplanationMonitor so it returns the inner HF transformers model "
        "(for example `lambda module: module.backbone`), or use a model built with transformers>=5 whose attention "
        "goes through the AttentionInterface (`model.set_attn_implementation` must work)."
    )


register_capture(HFAttentionCapture)

__all__ = [
    "AttentionCapture",
    "AttentionRecord",
    "HFAttentionCapture",
    "eval_mode",
    "register_capture",
    "resolve_capture",
    "supported_families",
]
