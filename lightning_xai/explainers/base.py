"""Explainer base class and the forward pass shared by all explainers of one batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_xai.errors import LightningXAIError
from lightning_xai.types import ModelInputs

if TYPE_CHECKING:
    from lightning_xai.capture.base import AttentionCall, AttentionCapture, WindowLayout
    from lightning_xai.families.base import ModelFamily
    from lightning_xai.modalities.base import Modality


def query_rows(query: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """``[B]`` long row indices from one index for every sample or an index per sample.

    Example:
        >>> import torch
        >>> cpu = torch.device("cpu")
        >>> query_rows(0, 2, cpu).tolist(), query_rows(torch.tensor([3, 1]), 2, cpu).tolist()
        ([0, 0], [3, 1])
    """
    if isinstance(query, Tensor):
        return query.to(device=device, dtype=torch.long).reshape(-1).expand(batch)
    return torch.full((batch,), int(query), dtype=torch.long, device=device)


def query_weights(query: int | Tensor, batch: int, num_tokens: int, device: torch.device) -> Tensor:
    """``[B, N]`` float32 weights over rows: one-hot on one row per sample, or the given ``[B, N]`` weights.

    Example:
        >>> import torch
        >>> query_weights(torch.tensor([2, 0]), 2, 3, torch.device("cpu")).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if isinstance(query, Tensor) and query.dim() == 2:
        return query.to(device=device, dtype=torch.float32)
    weights = torch.zeros(batch, num_tokens, device=device, dtype=torch.float32)
    weights[torch.arange(batch, device=device), query_rows(query, batch, device)] = 1.0
    return weights


def read_rows(matrix: Tensor, query: int | Tensor) -> Tensor:
    """``[B, N]``: row ``query[b]`` of each ``[B, N, N]`` matrix, or the weighted mean of rows (``[B, N]`` weights).

    Example:
        >>> import torch
        >>> matrix = torch.arange(8.0).view(1, 2, 4)[:, :, :2]  # [[0, 1], [4, 5]]
        >>> read_rows(matrix, 1).tolist(), read_rows(matrix, torch.tensor([[0.5, 0.5]])).tolist()
        ([[4.0, 5.0]], [[2.0, 3.0]])
    """
    if isinstance(query, Tensor) and query.dim() == 2:
        return torch.einsum("bq,bqk->bk", query.to(device=matrix.device, dtype=matrix.dtype), matrix)
    batch = matrix.shape[0]
    return matrix[torch.arange(batch, device=matrix.device), query_rows(query, batch, matrix.device)]


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
        hidden_states: every transformer layer's output ``[B, N, D]`` in layer order (live graph tensors), when
            the capture family records them.
        input_embeddings: ``[B, N, D]`` output of ``model.get_input_embeddings()`` in this forward (live, requires
            grad; for ViT/DeiT the patch embeddings without prefix tokens), when the model has one.
        model: the explained model (methods that need their own patched pass, e.g. LRP, re-run it).
        capture: the model's attention capture.
        modality: the token bookkeeping of the inputs.
        family: the model's family (prediction row, head read-out, LRP rules).
        query_index: ``[B]`` long, the token row that carries each sample's prediction (the ``[CLS]`` row of an
            encoder); attention-row methods read this row. Or ``[B, N]`` float weights over the rows where the
            prediction is read from several (a causal LM's completion rows): those methods read the weighted mean.
        window_layouts: for a model that attends within windows (Swin), where each attention call's rows lie on
            the input token grid (one :class:`~lightning_xai.capture.base.WindowLayout` per call); then
            :attr:`attentions` are ``[B x windows, H, w^2, w^2]``. None for one-axis models.
        attention_calls: when the pass ran on the model's sdpa attention (no explainer of the batch needed the maps
            and one asked for ``"attention_outputs"``): each call's q, k, v, mask and live output
            (:class:`~lightning_xai.capture.base.AttentionCall`); :attr:`attentions` is then empty.
    """

    inputs: ModelInputs
    logits: Tensor
    attentions: list[Tensor]
    valid_mask: Tensor
    special_mask: Tensor
    target: Tensor
    hidden_states: list[Tensor] | None = None
    input_embeddings: Tensor | None = None
    model: nn.Module | None = field(default=None, repr=False)
    capture: AttentionCapture | None = field(default=None, repr=False)
    modality: Modality | None = field(default=None, repr=False)
    family: ModelFamily | None = field(default=None, repr=False)
    query_index: Tensor | None = None
    window_layouts: list[WindowLayout] | None = None
    attention_calls: list[AttentionCall] | None = field(default=None, repr=False)
    _attention_gradients: list[Tensor] | None = field(default=None, repr=False)
    _output_gradients: list[Tensor] | None = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def prediction_rows(self) -> Tensor:
        """:attr:`query_index` (``[B]`` rows or ``[B, N]`` row weights), or row 0 for every sample when unset."""
        if self.query_index is not None:
            return self.query_index
        return torch.zeros(self.valid_mask.shape[0], dtype=torch.long, device=self.valid_mask.device)

    @property
    def target_score(self) -> Tensor:
        """Sum over the batch of each row's explained logit (pre-softmax): one backward gives per-row gradients."""
        if not self.logits.requires_grad:
            # explain() runs the shared pass without autograd when no method of the call declares that it
            # differentiates it: a custom explainer that takes gradients must say so in its `needs`
            raise LightningXAIError(
                "This shared pass ran without autograd, because no explainer of the call declared that it takes "
                "gradients of it: an explainer that differentiates the pass declares one of 'attention_gradients', "
                "'attention_outputs', 'hidden_states', 'head_readout' or 'input_embeddings' in its `needs` (or "
                "'own_pass' and runs its own forward)."
            )
        return self.logits.gather(1, self.target[:, None]).sum()

    def attention_gradients(self) -> list[Tensor]:
        """``d y_target / d A`` for every layer, computed once with ONE ``torch.autograd.grad`` and cached.

        The same call also yields ``d y_target / d input_embeddings`` (cached for gradient x input).

        Uses ``autograd.grad`` (never ``.backward()``), so no parameter ``.grad`` is touched; the graph is retained
        so that other explainers of the same pass can still differentiate.
        """
        if self._attention_gradients is None:
            # the input embeddings ride along, so gradient x input shares this backward too
            wanted = [*self.attentions] + ([self.input_embeddings] if self.input_embeddings is not None else [])
            grads = list(torch.autograd.grad(self.target_score, wanted, retain_graph=True, allow_unused=True))
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wanted, grads, strict=True)]
            if self.input_embeddings is not None:
                self._cache["input_embedding_gradients"] = grads.pop()
            self._attention_gradients = grads
        return self._attention_gradients

    def attention_output_gradients(self) -> list[Tensor]:
        """``d y_target / d O`` for every recorded attention call's output ``O`` (``[B, T, H, d_v]``), cached.

        ONE ``torch.autograd.grad`` (never ``.backward()``, the graph retained, as :meth:`attention_gradients`); the
        input embeddings ride along when their gradient is not cached yet, so gradient x input shares it. With
        ``O = A V``, ``d y / d A = d y / d O V^T``: what the maps' gradients would be, at ``O``'s size.
        """
        if self._output_gradients is None:
            wanted = [call.output for call in self.attention_calls or []]
            ride = self.input_embeddings is not None and "input_embedding_gradients" not in self._cache
            if ride:
                wanted.append(self.input_embeddings)  # type: ignore[arg-type]
            grads = list(torch.autograd.grad(self.target_score, wanted, retain_graph=True, allow_unused=True))
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wanted, grads, strict=True)]
            if ride:
                self._cache["input_embedding_gradients"] = grads.pop()
            self._output_gradients = grads
        return self._output_gradients


class Explainer(ABC):
    """A relevance method: maps a :class:`ForwardPass` to relevance per token ``[B, N]``.

    Subclasses set the class attributes below and implement :meth:`explain`; they are registered with
    :func:`lightning_xai.explainers.register_explainer`.
    """

    #: Registry and log-key name, snake_case (``"grad_sam"``).
    name: ClassVar[str]
    #: True when negative relevance is meaningful (LRP); selects a diverging colour map.
    signed: ClassVar[bool] = False
    #: What the method needs from the model's family (keys of :data:`lightning_xai.families.CAPABILITIES`:
    #: ``"attentions"``, ``"attention_gradients"``, ``"prediction_row"``, ``"hidden_states"``, ``"head_readout"``,
    #: ``"input_embeddings"``, ``"lrp_rules"``, ``"own_pass"``). A family that cannot provide one refuses the method
    #: at setup. They also shape the shared pass (:func:`lightning_xai.explanation_pass.explain`): the eager maps
    #: are recorded only for a method needing ``"attentions"``, ``"attention_gradients"`` or ``"hidden_states"``,
    #: and the pass keeps its autograd graph only for a method needing a gradient of it.
    needs: ClassVar[frozenset[str]] = frozenset({"attentions"})

    def requirements(self) -> frozenset[str]:
        """What this configured instance needs (default: :attr:`needs`; a method may need less for some settings)."""
        return self.needs

    def own_pass_forms_maps(self, capture: AttentionCapture | None = None) -> bool:
        """Whether this method's own passes may form ``T x T`` attention maps (their memory per row grows with ``T^2``).

        Sizes explanation chunks (:func:`lightning_xai.run.chunk_rows`). Default: every method that runs its own
        pass (``"own_pass"``), since it runs the model as configured; a method whose own pass never forms the maps
        (LRP on sdpa) says so. ``capture`` (the model's, when known) lets a method decide for that model.
        """
        return "own_pass" in self.requirements()

    def explain_and_predict(
        self,
        model: nn.Module,
        inputs: ModelInputs,
        family: ModelFamily,
        choose_target: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, Tensor] | None:
        """This method's map AND the model's logits from its own pass alone, or None (the default): it cannot.

        A method whose own pass is a forward of ``inputs`` as given that yields the model's own logits (LRP on the
        model's own attention: its rules change only the backward) returns ``(relevance [B, N], logits [B, C])``,
        explaining ``choose_target(logits)``. :func:`~lightning_xai.explain` then runs no shared forward when every
        method of the call reads only the model, the inputs and the target (they all run their own passes).
        """
        return None

    @abstractmethod
    def explain(self, forward: ForwardPass) -> Tensor:
        """Return raw relevance ``[B, N]`` (any float dtype; the caller detaches, casts and zeroes padding)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
