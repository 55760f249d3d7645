"""Adapters from user objects to the engine: a batch into model inputs and labels, a LightningModule into its model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_xai.errors import BatchFormatError
from lightning_xai.types import ModelInputs

#: Batch keys that are model inputs (everything else, e.g. ``labels`` or ``idx``, is ignored).
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")


@dataclass(frozen=True)
class AdaptedBatch:
    """Model inputs (keyword arguments of the HF model's forward) and the labels if the batch has them."""

    inputs: ModelInputs
    labels: Tensor | None = None
    #: ``[B, N]`` bool ground-truth rationale over the model tokens (for plausibility metrics), when available.
    rationale: Tensor | None = None


#: Batch key of ground-truth rationale masks (e.g. the planted-shortcut recipe's).
RATIONALE_KEY = "rationale_mask"


def _from_mapping(batch: Mapping[str, Any], labels: Tensor | None) -> AdaptedBatch:
    inputs = {key: batch[key] for key in INPUT_KEYS if isinstance(batch.get(key), Tensor)}
    if "input_ids" not in inputs and "pixel_values" not in inputs:
        raise BatchFormatError(_describe(batch))
    if labels is None:
        labels = next((batch[k] for k in LABEL_KEYS if isinstance(batch.get(k), Tensor)), None)
    rationale = batch.get(RATIONALE_KEY)
    return AdaptedBatch(inputs, labels, rationale.bool() if isinstance(rationale, Tensor) else None)


def default_batch_adapter(batch: Any) -> AdaptedBatch:
    """Understand the usual batch formats.

    Supported: HF-style dicts (``input_ids``/``attention_mask``/``token_type_ids`` or ``pixel_values``, labels
    under ``labels``/``label``); ``(inputs_dict, labels)``; ``(pixel_values, labels)`` with a float ``[B, C, H, W]``
    tensor; ``(input_ids, labels)`` and ``(input_ids, attention_mask, labels)`` with integer ids.

    Example:
        >>> import torch
        >>> adapted = default_batch_adapter((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])))
        >>> list(adapted.inputs), adapted.labels.tolist()
        (['pixel_values'], [0, 1])
    """
    if isinstance(batch, Mapping):
        return _from_mapping(batch, None)
    if isinstance(batch, (tuple, list)) and batch:
        first = batch[0]
        rest = list(batch[1:])
        labels = rest[-1] if rest and isinstance(rest[-1], Tensor) else None
        if isinstance(first, Mapping):
            return _from_mapping(first, labels)
        if isinstance(first, Tensor) and first.is_floating_point() and first.dim() == 4:
            return AdaptedBatch({"pixel_values": first}, labels)
        if isinstance(first, Tensor) and not first.is_floating_point() and first.dim() == 2:
            inputs = {"input_ids": first}
            if len(rest) == 2 and isinstance(rest[0], Tensor) and rest[0].shape == first.shape:
                inputs["attention_mask"] = rest[0]
            return AdaptedBatch(inputs, labels)
    raise BatchFormatError(_describe(batch))


def _describe(batch: Any) -> str:
    if isinstance(batch, Mapping):
        shape = "{" + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in batch.items()) + "}"
    elif isinstance(batch, (tuple, list)):
        shape = type(batch).__name__ + "(" + ", ".join(type(v).__name__ for v in batch) + ")"
    else:
        shape = type(batch).__name__
    return (
        f"ExplanationMonitor cannot read a validation batch of the form {shape}.\n"
        "Understood by default: a dict with 'input_ids' (+ 'attention_mask', 'token_type_ids') or 'pixel_values' "
        "and optional 'labels'; (inputs_dict, labels); (pixel_values [B,C,H,W], labels); (input_ids, labels); "
        "(input_ids, attention_mask, labels).\n"
        "What to do: pass `batch_adapter=` to ExplanationMonitor, a function that takes your batch and returns "
        "lightning_xai.adapters.AdaptedBatch(inputs={'input_ids': ..., 'attention_mask': ...}, labels=...)."
    )


def as_adapted(value: Any) -> AdaptedBatch:
    """Accept what a user adapter returns: an ``AdaptedBatch``, a ``(inputs, labels)`` pair or an inputs dict."""
    if isinstance(value, AdaptedBatch):
        return value
    if isinstance(value, Mapping):
        return AdaptedBatch(dict(value), None)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Mapping):
        return AdaptedBatch(dict(value[0]), value[1])
    raise BatchFormatError(
        f"The batch adapter returned a {type(value).__name__}; it must return an AdaptedBatch, an inputs dict, or "
        "an (inputs_dict, labels) pair."
    )


def default_model_getter(pl_module: nn.Module) -> nn.Module:
    """The outermost HF ``PreTrainedModel`` inside the LightningModule (e.g. ``self.model``), else the module.

    A PEFT wrapper found first (``PeftModel``) gives its base model (adapters active), and is refused where its
    base model would not compute its function (prompt learning): see :mod:`lightning_xai.families.peft_models`.

    Example:
        >>> import torch
        >>> default_model_getter(torch.nn.Linear(2, 2))
        Linear(in_features=2, out_features=2, bias=True)
    """
    from transformers import PreTrainedModel

    from lightning_xai.families.peft_models import is_peft_wrapper, unwrap_peft

    for module in pl_module.modules():
        if is_peft_wrapper(module):
            return unwrap_peft(module)
        if isinstance(module, PreTrainedModel):
            return module
    return pl_module
