"""Small frozen data types passed between capture, explainers, metrics and sinks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai.errors import ModelOutputError

#: Model inputs as keyword arguments of a HF model's ``forward`` (``input_ids``/``attention_mask`` or
#: ``pixel_values``), without labels.
ModelInputs = dict[str, Tensor]


def logits_of(output: object) -> Tensor:
    """Logits from a HF model output, a tuple whose first item is the logits, or a tensor.

    Example:
        >>> import torch
        >>> logits_of((torch.zeros(1, 2), "hidden states")).shape
        torch.Size([1, 2])
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ModelOutputError(f"Cannot find logits in a model output of type {type(output).__name__}")


@dataclass(frozen=True)
class Explanation:
    """Relevance per model token for a batch, as produced by one explainer.

    The token axis ``N`` is the model's own sequence (text: word pieces incl. ``[CLS]``/``[SEP]``/padding;
    vision: prefix tokens followed by the patch grid in row-major order).

    Attributes:
        method: registry name of the explainer (``"grad_sam"``).
        relevance: ``[B, N]`` float32, detached; padding positions are exactly zero.
        valid_mask: ``[B, N]`` bool, True for real (non-padding) tokens.
        special_mask: ``[B, N]`` bool, True for special/prefix tokens (``[CLS]``, ``[SEP]``, DeiT's distillation
            token, padding). They are never ranked or perturbed by metrics.
        target: ``[B]`` long, the class each row explains.
        signed: whether negative relevance is meaningful (LRP) or the map is non-negative by construction.
        logits: ``[B, C]`` detached float32 logits of the explained forward, when available.
    """

    method: str
    relevance: Tensor
    valid_mask: Tensor
    special_mask: Tensor
    target: Tensor
    signed: bool = False
    logits: Tensor | None = None

    @property
    def content_mask(self) -> Tensor:
        """``[B, N]`` bool: the tokens an explanation ranks (valid and not special)."""
        return self.valid_mask & ~self.special_mask

    def to(self, device: torch.device | str) -> Explanation:
        """Copy with all tensors on ``device``."""
        return Explanation(
            self.method,
            self.relevance.to(device),
            self.valid_mask.to(device),
            self.special_mask.to(device),
            self.target.to(device),
            self.signed,
            None if self.logits is None else self.logits.to(device),
        )
