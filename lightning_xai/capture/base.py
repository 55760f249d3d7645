"""Capture: how attention probabilities are obtained from a model for ONE explanation pass.

A capture family switches the model to a recording attention path inside a context manager and restores
everything (attention backend, train/eval mode of every module) on exit, also when an exception is raised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn


@dataclass
class AttentionRecord:
    """Post-softmax attention of every layer, recorded during one forward, still part of the autograd graph.

    Attributes:
        attentions: one ``[B, H, N, N]`` tensor per self-attention call, in call order (= layer order for
            encoders). They are the tensors that multiply the values, so ``d logit / d A`` is well defined.
        hidden_states: the output ``[B, N, D]`` of every transformer layer, in call order (live graph tensors),
            when the family can record them.
    """

    attentions: list[Tensor] = field(default_factory=list)
    hidden_states: list[Tensor] = field(default_factory=list)


class AttentionCapture(ABC):
    """One model family: find out whether a model is supported and record its attention for one pass.

    Subclasses are registered with :func:`lightning_xai.capture.register_capture`.
    """

    #: Human-readable family name, listed in "unsupported model" errors.
    family: ClassVar[str]
    #: Examples of supported architectures, listed in errors.
    examples: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    @abstractmethod
    def supports(cls, model: nn.Module) -> bool:
        """Return True when this family can record the attention of ``model``."""

    @abstractmethod
    @contextmanager
    def record(self) -> Iterator[AttentionRecord]:
        """Put the model in eval mode with a recording attention path; restore everything on exit."""


def first_tensor(output: Any) -> Tensor | None:
    """A module's output tensor: the output itself, or the first item of a tuple.

    Swin's and Data2Vec's embeddings return ``(tokens, grid size)``.
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


def with_first(output: Any, tensor: Tensor) -> Any:
    """``output`` with its tensor (see :func:`first_tensor`) replaced by ``tensor``.

    Example:
        >>> import torch
        >>> with_first((torch.zeros(1), (2, 3)), torch.ones(1))
        (tensor([1.]), (2, 3))
    """
    if isinstance(output, (tuple, list)):
        return type(output)([tensor, *output[1:]])
    return tensor


@contextmanager
def eager_forward(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model's own (eager) modules inside, even after an in-place ``model.compile()``; restore on exit.

    A compiled call does not run the forward hooks and the recording attention the explanation passes rely on the
    way the eager modules do (LeGrad's layer outputs, the input embeddings), so maps would silently change. The
    compiled callable of every module is set aside for the block and put back afterwards (training keeps it).

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> m.compile(backend="eager")
        >>> with eager_forward(m):
        ...     inside = m._compiled_call_impl
        >>> inside is None, m._compiled_call_impl is not None
        (True, True)
    """
    compiled = [(module, module.__dict__["_compiled_call_impl"]) for module in model.modules()
                if module.__dict__.get("_compiled_call_impl") is not None]
    try:
        for module, _ in compiled:
            module._compiled_call_impl = None
        yield model
    finally:
        for module, call in compiled:
            module._compiled_call_impl = call


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every module to eval mode and restore each module's own previous mode on exit.

    Restoring per module (not ``model.train(prev)``) keeps deliberately frozen sub-modules (e.g. a backbone kept
    in eval during fine-tuning) exactly as they were.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(2, 2))
        >>> _ = m.train(); _ = m[1].eval()  # a frozen sub-module stays in eval
        >>> with eval_mode(m):
        ...     assert not m.training and not m[0].training
        >>> m.training, m[0].training, m[1].training
        (True, True, False)
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training
