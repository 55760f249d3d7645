r"""Input-gradient baselines on the word/patch embeddings: gradient x input and integrated gradients.

Gradient x input: :math:`s_t = \sum_d e_{t,d}\, \partial y_c / \partial e_{t,d}` with :math:`e` the output of
``model.get_input_embeddings()`` (word embeddings for text, patch embeddings for ViT/DeiT, before position
embeddings and prefix tokens) and :math:`y_c` the explained pre-softmax logit. Signed. It reuses the embeddings
of the shared forward: no extra forward, one extra ``torch.autograd.grad`` (cached on the pass).

Integrated gradients (Sundararajan, Taly & Yan, ICML 2017):

.. math::

    \mathrm{IG}_t = \sum_d (e_{t,d} - e'_{t,d}) \cdot \frac{1}{m} \sum_{k=1}^{m}
        \frac{\partial y_c}{\partial e_{t,d}}\Big(e' + \tfrac{k}{m}(e - e')\Big)

(the paper's right Riemann sum, ``m = steps``), with baseline :math:`e'` = zero embeddings by default, or the
embedding of one token id at every position (e.g. ``[PAD]`` or ``[MASK]``, text only). The scaled embeddings are
fed by a forward hook on ``model.get_input_embeddings()`` that REPLACES its output, so everything after the
embedding layer (position embeddings, prefix tokens, masks) is the model's own. Completeness:
:math:`\sum_t \mathrm{IG}_t \approx y_c(e) - y_c(e')`. Prefix tokens of ViT/DeiT have no input embedding and get 0.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_xai.capture.base import eager_forward, eval_mode, first_tensor, with_first
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers.base import Explainer, ForwardPass
from lightning_xai.modalities.base import select
from lightning_xai.types import logits_of


def _to_tokens(scores: Tensor, num_tokens: int) -> Tensor:
    """``[B, P]`` embedding-position scores -> ``[B, N]``, prefix tokens (ViT [CLS], DeiT distillation) at 0."""
    prefix = num_tokens - scores.shape[1]
    if prefix < 0:
        raise LightningXAIError(f"{scores.shape[1]} input embeddings do not fit in {num_tokens} tokens")
    return nn.functional.pad(scores, (prefix, 0))


def _embedding_module(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    module = get() if callable(get) else None
    if not isinstance(module, nn.Module):
        raise LightningXAIError(f"{type(model).__name__} has no get_input_embeddings(): cannot take input gradients")
    return module


def embedding_gradients(forward: ForwardPass) -> Tensor:
    """``d y_target / d e`` on the pass's input embeddings, computed once and cached on the pass."""
    if forward.input_embeddings is None:
        raise LightningXAIError("No input embeddings were recorded in this pass (model without get_input_embeddings)")
    cached = forward._cache.get("input_embedding_gradients")
    if cached is None and forward.attentions:
        forward.attention_gradients()  # one backward for attention and embedding gradients alike
        cached = forward._cache.get("input_embedding_gradients")
    if cached is None:
        (cached,) = torch.autograd.grad(
            forward.target_score, forward.input_embeddings, retain_graph=True, allow_unused=True
        )
        if cached is None:
            cached = torch.zeros_like(forward.input_embeddings)
        forward._cache["input_embedding_gradients"] = cached
    return cached


def gradient_x_input(embeddings: Tensor, gradients: Tensor, num_tokens: int) -> Tensor:
    """Gradient x input summed over the hidden dimension.

    Args:
        embeddings: ``[B, P, D]`` input embeddings.
        gradients: ``[B, P, D]`` gradient of the explained logit w.r.t. them.
        num_tokens: ``N`` tokens of the attention maps (``N - P`` prefix tokens are prepended with 0).

    Returns:
        ``[B, N]`` float32, signed.

    Example:
        >>> import torch
        >>> e, g = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]]), torch.tensor([[[0.5, 0.5], [1.0, 1.0]]])
        >>> gradient_x_input(e, g, num_tokens=3).tolist()  # one prefix token
        [[0.0, 1.5, 2.0]]
    """
    return _to_tokens((embeddings.detach().float() * gradients.detach().float()).sum(dim=-1), num_tokens)


class GradientXInput(Explainer):
    """Gradient x input on the word/patch embeddings of the shared forward (signed).

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> maps = explain(model, inputs, [GradientXInput()], modality=text)["gradient_x_input"]
        >>> maps.signed, float(maps.relevance[0, 4])
        (True, 0.0)
    """

    name: ClassVar[str] = "gradient_x_input"
    signed: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"input_embeddings"})

    def explain(self, forward: ForwardPass) -> Tensor:
        """Gradient x input of the pass's recorded embeddings."""
        gradients = embedding_gradients(forward)
        assert forward.input_embeddings is not None
        return gradient_x_input(forward.input_embeddings, gradients, forward.valid_mask.shape[1])


Baseline = Literal["zero"] | int


def integrated_gradients(
    model: nn.Module,
    inputs: dict[str, Tensor],
    target: Tensor,
    *,
    steps: int = 20,
    baseline: Baseline = "zero",
    max_batch_size: int = 64,
    embeddings: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """Integrated gradients on the output of ``model.get_input_embeddings()``, batched over steps.

    The ``B * steps`` interpolated inputs run in chunks of at most ``max_batch_size`` rows, each chunk one forward
    and one ``torch.autograd.grad``; the model is in eval mode during the passes (each module's mode is restored)
    and the embedding hook is removed on exit. No parameter ``.grad`` is touched.

    Args:
        model: the HF model (its own attention implementation is used; attention is not needed).
        inputs: batched keyword inputs.
        target: ``[B]`` explained class per row.
        steps: ``m``, points of the right Riemann sum ``k/m``, ``k = 1..m``.
        baseline: ``"zero"`` (zero embeddings) or a token id whose embedding is the baseline at every position.
        max_batch_size: most interpolated rows per forward.
        embeddings: the input-embedding module (default ``model.get_input_embeddings()``; the family's).

    Returns:
        ``([B, P] IG per embedding position (signed), [B] completeness gap sum(IG) - (y_c(e) - y_c(e')))``.
    """
    if steps < 1 or max_batch_size < 1:
        raise ValueError(f"steps and max_batch_size must be >= 1, got {steps} and {max_batch_size}")
    module = embeddings if embeddings is not None else _embedding_module(model)
    batch = target.shape[0]
    rows = torch.arange(batch, device=target.device).repeat(steps)  # step-major: row k*B + b
    alphas = torch.arange(1, steps + 1, device=target.device, dtype=torch.float32).repeat_interleave(batch) / steps
    state: dict[str, object] = {}

    def hook(_module: nn.Module, _args: tuple, full_output: Any) -> Any:
        output = first_tensor(full_output).detach()  # type: ignore[union-attr]
        base = state["baseline"](output)  # type: ignore[operator]
        alpha = state["alpha"].to(output.dtype).view(-1, *([1] * (output.dim() - 1)))  # type: ignore[union-attr]
        scaled = (base + alpha * (output - base)).requires_grad_()
        state["scaled"], state["input"], state["base"] = scaled, output, base
        return with_first(full_output, scaled)

    def make_baseline(output: Tensor) -> Tensor:
        if baseline == "zero":
            return torch.zeros_like(output)
        if isinstance(baseline, bool) or not isinstance(baseline, int):
            raise ValueError(f"baseline must be 'zero' or a token id, got {baseline!r}")
        if not isinstance(module, nn.Embedding):
            raise LightningXAIError("A token-id baseline needs a word-embedding table (text models)")
        weight = module.weight.detach()[baseline].to(output.dtype)
        return weight.expand_as(output)

    state["baseline"] = make_baseline
    total: Tensor | None = None
    gap_end = torch.zeros(batch, dtype=torch.float32, device=target.device)
    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), eager_forward(model):  # the interpolation is a hook on the eager embeddings
            for start in range(0, rows.shape[0], max_batch_size):
                index = rows[start : start + max_batch_size]
                state["alpha"] = alphas[start : start + max_batch_size]
                logits = logits_of(model(**select(inputs, index)))
                score = logits.gather(1, target[index][:, None])[:, 0]
                (gradient,) = torch.autograd.grad(score.sum(), state["scaled"])  # type: ignore[arg-type]
                delta = (state["input"] - state["base"]).float()  # type: ignore[operator]
                contribution = (gradient.float() * delta).sum(dim=-1) / steps  # [chunk, P]
                if total is None:
                    total = torch.zeros(batch, *contribution.shape[1:], device=contribution.device)
                total.index_add_(0, index, contribution)
                last = state["alpha"] == 1.0  # type: ignore[operator]
                gap_end.index_add_(0, index[last], score.detach().float()[last])
            state["alpha"] = torch.zeros(batch, device=target.device)
            all_rows = torch.arange(batch, device=target.device)
            with torch.no_grad():
                base_logits = logits_of(model(**select(inputs, all_rows))).gather(1, target[:, None])[:, 0]
    finally:
        handle.remove()
    assert total is not None
    gap = total.sum(dim=1) - (gap_end - base_logits.float())
    return total, gap


class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al., ICML 2017) on the word/patch embeddings (signed).

    Runs its own ``steps`` interpolated passes (batched, chunked by ``max_batch_size`` rows) through a forward
    hook on ``model.get_input_embeddings()`` that replaces its output; prefix tokens of ViT/DeiT get 0.

    Args:
        steps: Riemann steps ``m`` (right sum ``k/m``, as the paper).
        baseline: ``"zero"`` (default: all-zero embeddings) or a token id (text: e.g. the ``[PAD]`` or ``[MASK]``
            id) whose embedding replaces every position.
        max_batch_size: most interpolated rows per forward.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> maps = explain(model, inputs, [IntegratedGradients(steps=8)], modality=text)["integrated_gradients"]
        >>> maps.relevance.shape, float(maps.relevance[0, 4])
        (torch.Size([1, 5]), 0.0)
    """

    name: ClassVar[str] = "integrated_gradients"
    signed: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"own_pass", "input_embeddings"})

    def __init__(self, steps: int = 20, baseline: Baseline = "zero", max_batch_size: int = 64) -> None:
        if steps < 1 or max_batch_size < 1:
            raise ValueError(f"steps and max_batch_size must be >= 1, got {steps} and {max_batch_size}")
        if baseline != "zero" and (isinstance(baseline, bool) or not isinstance(baseline, int)):
            raise ValueError(f"baseline must be 'zero' or a token id, got {baseline!r}")
        self.steps = int(steps)
        self.baseline: Baseline = baseline
        self.max_batch_size = int(max_batch_size)

    def explain(self, forward: ForwardPass) -> Tensor:
        """IG map of the pass's inputs and targets (own interpolated passes)."""
        if forward.model is None:
            raise LightningXAIError("Integrated gradients needs the model (ForwardPass.model) to run its own passes")
        inputs = {key: value.detach() for key, value in forward.inputs.items()}
        scores, _ = integrated_gradients(
            forward.model,
            inputs,
            forward.target,
            steps=self.steps,
            baseline=self.baseline,
            max_batch_size=self.max_batch_size,
            embeddings=None if forward.family is None else forward.family.word_embeddings(),
        )
        return _to_tokens(scores, forward.valid_mask.shape[1])
