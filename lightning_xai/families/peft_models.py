"""PEFT-wrapped models (``pip install lightning-xai[peft]``): explained through the base model, adapters active.

``peft.get_peft_model(model, LoraConfig(...))`` returns a ``PeftModel`` whose ``get_base_model()`` is the original
HF model with the adapter layers INJECTED into it (a LoRA ``q_proj`` computes ``W x + s B A dropout(x)``): its
forward is the wrapper's forward (for every tuner that injects layers: LoRA, IA3, LoHa, ...). So the monitor and
:func:`~lightning_xai.explain` explain that base model, with the adapters as they are (active, or disabled inside
``with peft_model.disable_adapter():``), and its family is the base model's. Nothing is copied or merged.

Prompt-learning methods (prompt tuning, prefix tuning, P-tuning) are refused: their virtual tokens are added by the
wrapper's own forward, which the base model does not run, so its maps would explain another function.

The wrapper is recognised by class hierarchy (``peft.PeftModel``, ``peft.tuners.tuners_utils.BaseTuner``), looked
up only when ``peft`` is already imported (no PEFT object can exist otherwise), never by class-name strings.

LRP on LoRA layers: the base linear layer and the adapter's ``lora_A``/``lora_B`` are ``nn.Linear`` layers and get
the linear rule of the family's table each, the sum of the two branches splits relevance in proportion to their
contributions (as a residual connection), and the adapter dropout is off in the explanation pass (eval mode). With
LRP-0 on linear layers (``epsilon = gamma = 0``) this equals LRP of the merged model exactly; with an epsilon it
differs by the stabiliser only; the gamma rule acts on each branch's weights, not on the merged weight. DoRA's
magnitude module has no rule, so LRP is refused on DoRA models (with the module type named).
"""

from __future__ import annotations

import sys

from torch import nn

from lightning_xai.errors import UnsupportedModelError

__all__ = ["is_peft_wrapper", "peft_base_model", "unwrap_peft"]


def _peft_wrapper_classes() -> tuple[type, ...]:
    """PEFT's wrapper classes, when ``peft`` has been imported (else no PEFT wrapper can exist)."""
    peft = sys.modules.get("peft")
    if peft is None:
        return ()
    classes: list[type] = [cls for cls in (getattr(peft, "PeftModel", None),) if isinstance(cls, type)]
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    base_tuner = getattr(tuners, "BaseTuner", None)
    if isinstance(base_tuner, type):
        classes.append(base_tuner)
    return tuple(classes)


def is_peft_wrapper(model: object) -> bool:
    """True for a ``peft.PeftModel`` (any task subclass) or a bare PEFT tuner model (``LoraModel``, ...).

    Example:
        >>> is_peft_wrapper(nn.Linear(2, 2))
        False
    """
    classes = _peft_wrapper_classes()
    return bool(classes) and isinstance(model, classes)


def peft_base_model(model: nn.Module) -> nn.Module:
    """The HF model inside a PEFT wrapper, with its injected adapter layers (shared, not copied).

    Args:
        model: a ``PeftModel`` or a PEFT tuner model (see :func:`is_peft_wrapper`).

    Raises:
        UnsupportedModelError: the active adapter is a prompt-learning method (its virtual tokens are added by the
            wrapper's forward, outside the base model), or the wrapper holds no model.
    """
    config_of = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    config = config_of.get(active) if isinstance(config_of, dict) and isinstance(active, str) else None
    if config is not None and getattr(config, "is_prompt_learning", False):
        method = getattr(config, "peft_type", "prompt learning")
        raise UnsupportedModelError(
            f"The active PEFT adapter {active!r} is a prompt-learning method ({getattr(method, 'value', method)}): "
            "its virtual tokens are added by the PeftModel's own forward, which the base model does not run, so the "
            "base model's explanations would explain another function. What to do: use an adapter injected into the "
            "model's layers (LoRA, IA3, ...), or monitor the model without the prompt-learning adapter."
        )
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else getattr(model, "model", None)
    if not isinstance(base, nn.Module) or base is model:
        raise UnsupportedModelError(f"The PEFT wrapper {type(model).__name__} holds no base model to explain.")
    return base


def unwrap_peft(model: nn.Module) -> nn.Module:
    """``model``'s PEFT base model (see :func:`peft_base_model`) when it is a PEFT wrapper, else ``model`` itself.

    Example:
        >>> layer = nn.Linear(2, 2)
        >>> unwrap_peft(layer) is layer
        True
    """
    while is_peft_wrapper(model):
        model = peft_base_model(model)
    return model
