"""Capture: how attention probabilities are obtained from a model for ONE explanation pass.

A capture family switches the model to a recording attention path inside a context manager and restores
everything (attention backend, train/eval mode of every module) on exit, also when an exception is raised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_xai.errors import LightningXAIError


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
    #: Where the model attends within windows (Swin): one :class:`WindowLayout` per attention call, else empty.
    window_layouts: list[WindowLayout] = field(default_factory=list)
    #: Each attention call's inputs and output, when the pass ran on the model's sdpa attention
    #: (:meth:`AttentionCapture.stream`); then :attr:`attentions` is empty.
    calls: list[AttentionCall] = field(default_factory=list)


@dataclass(frozen=True)
class AttentionCall:
    """One attention call of a pass on the model's sdpa attention: what the attention function received and returned.

    The probabilities are never formed; they are ``softmax(query key^T * scaling + mask)`` (with ``causal`` the
    upper-left causal mask), rebuilt from these tensors in blocks of query rows where a method needs them.

    Attributes:
        query: ``[B, H, T, d]`` queries as the attention function receives them (after the model's own transforms,
            rotary embeddings included), live graph tensors.
        key: ``[B, H_kv, S, d]`` keys; ``H_kv`` divides ``H`` (grouped-query attention: query head ``h`` reads
            key/value head ``h // (H / H_kv)``, as HF's ``repeat_kv``).
        value: ``[B, H_kv, S, d_v]`` values.
        mask: the mask the model passed: bool (True = attend) or additive float, broadcastable to
            ``[B, H, T, S]``; None when there is none.
        causal: whether sdpa applied its own causal mask (``is_causal``; then ``mask`` is None).
        scaling: the factor of ``query key^T``.
        output: ``[B, T, H, d_v]`` the attention output ``O = A V`` (live), whose gradient gives
            ``d y / d A = d y / d O V^T``.
    """

    query: Tensor
    key: Tensor
    value: Tensor
    mask: Tensor | None
    causal: bool
    scaling: float
    output: Tensor


@dataclass(frozen=True)
class WindowLayout:
    """Where the rows of one windowed attention call (``[B x windows, H, w^2, w^2]``) lie on the input token grid.

    Stage ``level`` of a Swin-like model halves the input grid ``level`` times by merging 2 x 2 tokens (the
    bottom/right edge padded first), so input token ``(r, c)`` lies in stage token ``(r >> level, c >> level)``.

    Attributes:
        token_of: ``[windows, w^2]`` long, the stage-grid token (row-major) at each window position, ``-1`` where
            the window was padded; windows in the model's own order (the batch is window-major outside it).
        stage_shape: ``(height, width)`` of the stage's token grid.
        input_shape: ``(height, width)`` of the input token grid (the first stage's).
        level: how many times the stage's grid was halved.

    Example:
        >>> import torch
        >>> layout = WindowLayout(torch.tensor([[0, 1, 2, 3]]), (1, 4), (2, 8), 1)  # one window, 4 merged tokens
        >>> layout.to_input_grid(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()  # each covers 2 x 2 inputs
        [[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]]
    """

    token_of: Tensor
    stage_shape: tuple[int, int]
    input_shape: tuple[int, int]
    level: int

    def valid(self, batch: int) -> Tensor:
        """``[batch x windows, w^2]`` bool: the window positions that hold a token (not padding)."""
        return (self.token_of >= 0).repeat(batch, 1)

    def to_input_grid(self, scores: Tensor) -> Tensor:
        """``[B x windows, w^2]`` scores of window positions -> ``[B, input tokens]``.

        Each stage token's score lands on every input token it covers; window padding is dropped.
        """
        num_windows, area = self.token_of.shape
        flat = scores.reshape(-1, num_windows * area)
        token_of = self.token_of.reshape(-1).to(scores.device)
        keep = token_of >= 0
        height, width = self.stage_shape
        stage = torch.zeros(flat.shape[0], height * width, dtype=scores.dtype, device=scores.device)
        stage[:, token_of[keep]] = flat[:, keep]
        rows = torch.arange(self.input_shape[0], device=scores.device) >> self.level
        cols = torch.arange(self.input_shape[1], device=scores.device) >> self.level
        return stage[:, (rows[:, None] * width + cols[None, :]).reshape(-1)]


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

    @classmethod
    def streaming_refusal(cls, model: nn.Module) -> str | None:
        """Why :meth:`stream` cannot run ``model`` (None when it can). Default: this capture cannot stream."""
        return (
            f"its attention is recorded by {cls.family} capture, which cannot run it on the model's sdpa attention "
            "and keep each call's q, k, v and output"
        )

    def stream(self) -> AbstractContextManager[AttentionRecord]:
        """Like :meth:`record`, on the model's sdpa attention: keep each call's q, k, v and output, never the maps.

        Only captures whose :meth:`streaming_refusal` is None implement it.
        """
        why = self.streaming_refusal(self.model)
        raise LightningXAIError(f"The {self.family} capture cannot stream attention: {why}")


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
