"""AdamW with the usual decay exclusions and a per-step warmup + linear/cosine decay schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["SCHEDULES", "adamw_with_schedule", "lr_multiplier"]

#: Decay shapes after the warmup.
SCHEDULES = ("linear", "cosine", "constant")


def lr_multiplier(step: int, warmup: int, total_steps: int | None, schedule: str = "linear") -> float:
    """Learning-rate factor at optimizer ``step``: linear warmup over ``warmup`` steps, then ``schedule``.

    Example:
        >>> [round(lr_multiplier(s, 2, 6, "linear"), 2) for s in range(6)]
        [0.33, 0.67, 1.0, 0.75, 0.5, 0.25]
        >>> [round(lr_multiplier(s, 0, 4, "cosine"), 2) for s in range(4)]
        [1.0, 0.85, 0.5, 0.15]
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total_steps is None or schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def adamw_with_schedule(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
    total: float,
    schedule: str = "linear",
) -> dict[str, Any]:
    """AdamW (no decay on biases, LayerNorm weights, embeddings' position/CLS tokens) + a per-step LambdaLR.

    Args:
        model: Module whose trainable parameters are optimised.
        learning_rate: Peak learning rate.
        weight_decay: Decoupled weight decay of the decayed group.
        warmup_ratio: Fraction of the total steps spent in linear warmup.
        total: Total optimizer steps (``trainer.estimated_stepping_batches``); infinite or <= 0: warm up, then flat.
        schedule: ``"linear"``, ``"cosine"`` or ``"constant"`` after the warmup.

    Returns:
        What ``configure_optimizers`` returns.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if name.endswith("bias") or param.dim() < 2 or name.endswith(("cls_token", "position_embeddings")):
            no_decay.add(id(param))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate)
    # An unbounded run (max_steps=-1, max_epochs=-1) has no end to decay towards: warm up, then stay flat.
    total_steps = int(total) if math.isfinite(total) and total > 0 else None
    warmup = int(warmup_ratio * total_steps) if total_steps else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup, total_steps, schedule)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def log_classification_step(module: Any, prefix: str, logits: torch.Tensor, labels: torch.Tensor,
                            loss: torch.Tensor) -> None:
    """Log ``<prefix>/loss`` and ``<prefix>/acc``: per step while training, per epoch otherwise.

    ``batch_size`` is given explicitly: Lightning cannot infer it from a dict batch reliably.
    """
    acc = (logits.argmax(dim=-1) == labels).float().mean()
    on_step = prefix == "train"
    kwargs: dict[str, Any] = {"on_step": on_step, "on_epoch": not on_step, "batch_size": labels.shape[0]}
    module.log(f"{prefix}/loss", loss, prog_bar=True, **kwargs)
    module.log(f"{prefix}/acc", acc, prog_bar=not on_step, **kwargs)
