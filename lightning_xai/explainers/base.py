"""Explainer base class and the forward pass shared by all explainers of one batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from lightning_xai.types import ModelInputs


@dataclass
class ForwardPass:
    """One recorded forward of a batch, shared by every explainer that needs only attention (and its gradient).

    Attributes:
        inputs: the (cloned) model inputs of the pass.
        logits: ``[B, C]`` live logits.
        attentions: per layer ``[B, H, N, N]`` post-softmax attention, live graph tensors.
        valid_mask: ``[B, N]`` real (non-padding) tokens.
        special_mask: ``[B, N]`` special/prefix tokens and padding.
        target: ``[B]`` class explained per row.
    """

    inputs: ModelInputs
    logits: Tensor
    attentions: list[Tensor]
    valid_mask: Tensor
    special_mask: Tensor
    target: Tensor
    _attention_gradients: list[Tensor] | None = field(default=None, repr=False)

    @property
    def target_score(self) -> Tensor:
        """Sum over the batch of each row's explained logit (pre-softmax): one backward gives per-row gradients."""
        return self.logits.gather(1, self.target[:, None]).sum()

    def attention_gradients(self) -> list[Tensor]:
        """``d y_target / d A`` for every layer, computed once with ONE ``torch.autograd.grad`` and cached.

        Uses ``autograd.grad`` (never ``.backward()``), so no parameter ``.grad`` is touched; the graph is retained
        so that other explainers of the same pass can still differentiate.
        """
        if self._attention_gradients is None:
            grads = torch.autograd.grad(self.target_score, self.attentions, retain_graph=True, allow_unused=True)
            self._attention_gradients = [
                torch.zeros_like(a) if g is None else g for a, g in zip(self.attentions, grads, strict=True)
            ]
        return self._attention_gradients


class Explainer(ABC):
    """A relevance method: maps a :class:`ForwardPass` to relevance per token ``[B, N]``.

    Subclasses set the class attributes below and implement :meth:`explain`; they are registered with
    :func:`lightning_xai.explainers.register_explainer`.
    """

    #: Registry and log-key name, snake_case (``"grad_sam"``).
    name: ClassVar[str]
    #: True when negative relevance is meaningful (LRP); selects a diverging colour map.
    signed: ClassVar[bool] = False
    #: What the method needs from the pass: ``"attentions"``, ``"attention_gradients"``.
    needs: ClassVar[frozenset[str]] = frozenset({"attentions"})

    @abstractmethod
    def explain(self, forward: ForwardPass) -> Tensor:
        """Return raw relevance ``[B, N]`` (any float dtype; the caller detaches, casts and zeroes padding)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
