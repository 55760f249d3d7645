r"""Input-gradient baselines on the word/patch embeddings: gradient x input and integrated gradients.

Gradient x input: :math:`s_t = \sum_d e_{t,d}\, \partial y_c / \partial e_{t,d}` with :math:`e` the output of
``model.get_input_embeddings()`` (word embeddings for text, patch embeddings for ViT/DeiT, before position
embeddings and prefix tokens) and :math:`y_c` the explained pre-softmax logit. Signed. It reuses the embeddings
of the shared forward: no extra forward, one extra ``torch.autograd.grad`` (cached on the pass).

Integrated gradients (Sundararajan, Taly & Yan, ICML 2017):

.. math::

    \mathrm{IG}_t = \sum_d (e_{t,d} - e'_{t,d}) \cdot \frac{1}{m} \sum_{k=1}^{m}
        \frac{\partial y_c}{\partial e_{t,d}}\Big(e' + \tfrac{k}{m}(e - e')\Big)

(the paper's right Riemann sum, ``m = steps``; ``method="gausslegendre"`` and captum's other Riemann rules replace
``k/m`` and ``1/m`` by their nodes and weights, :func:`quadrature`), with baseline :math:`e'` = zero embeddings by
default, the embedding of one token id at every position (e.g. ``[PAD]`` or ``[MASK]``, text only), or
``"keep_special"``: the special tokens keep their own embedding and every other position takes the pad token's
(captum's BERT tutorials and ferret; :meth:`IntegratedGradients.captum` is that preset). The scaled embeddings are
fed by a forward hook on ``model.get_input_embeddings()`` that REPLACES its output, so everything after the
embedding layer (position embeddings, prefix tokens, masks) is the model's own. Completeness:
:math:`\sum_t \mathrm{IG}_t \approx y_c(e) - y_c(e')`. Prefix tokens of ViT/DeiT have no input embedding and get 0.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
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
    elif cached is None and forward.attention_calls:
        forward.attention_output_gradients()  # a pass on sdpa: one backward for the outputs' and embeddings' alike
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


Baseline = Literal["zero", "keep_special"] | int
Method = Literal["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre"]
#: The quadrature rules of ``method=`` (captum's names; ``"riemann_right"`` is the paper's sum and our default).
METHODS: tuple[str, ...] = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: Method, steps: int) -> tuple[Tensor, Tensor | None]:
    """Nodes ``alpha_k`` in ``[0, 1]`` and weights ``w_k`` of an IG rule, as captum's ``approximation_methods``.

    ``IG ≈ (e - e') · Σ_k w_k ∇y(e' + alpha_k (e - e'))``. The equal-weight Riemann rules return ``None`` for the
    weights (each step then counts ``1 / steps``, divided, so ``"riemann_right"`` gives the same floats as before the
    other rules existed). ``"gausslegendre"``: numpy's Gauss-Legendre nodes and weights on ``[-1, 1]`` mapped to
    ``[0, 1]`` (``alpha = (1 + x) / 2``, ``w = w / 2``), captum's default rule, exact for polynomials of degree
    ``2 m - 1``. ``"riemann_trapezoid"`` is captum's: nodes ``linspace(0, 1, m)`` with weights ``1/m`` (the two ends
    ``1/(2m)``), which sum to ``(m - 1)/m``, not 1, reproduced as captum has it.

    Args:
        method: one of :data:`METHODS`.
        steps: ``m`` nodes (``>= 2`` for ``"riemann_trapezoid"``).

    Returns:
        ``(alphas [m] float32, weights [m] float32 or None)``.

    Example:
        >>> alphas, weights = quadrature("gausslegendre", 2)
        >>> [round(a, 4) for a in alphas.tolist()], weights.tolist()
        ([0.2113, 0.7887], [0.5, 0.5])
        >>> quadrature("riemann_right", 4)[0].tolist()
        [0.25, 0.5, 0.75, 1.0]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if steps < (2 if method == "riemann_trapezoid" else 1):
        raise ValueError(f"{method} needs at least {2 if method == 'riemann_trapezoid' else 1} steps, got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor(0.5 * (1 + nodes), dtype=torch.float32), torch.tensor(0.5 * weights, dtype=torch.float32)
    if method == "riemann_right":
        return torch.arange(1, steps + 1, dtype=torch.float32) / steps, None
    if method == "riemann_left":
        return torch.linspace(0, 1 - 1 / steps, steps), None
    if method == "riemann_middle":
        return torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps), None
    weights = torch.full((steps,), 1 / steps, dtype=torch.float32)
    weights[0] /= 2
    weights[-1] /= 2
    return torch.linspace(0, 1, steps), weights


def _check_baseline(baseline: object) -> None:
    if baseline in ("zero", "keep_special"):
        return
    if isinstance(baseline, bool) or not isinstance(baseline, int):
        raise ValueError(f"baseline must be 'zero', 'keep_special' or a token id, got {baseline!r}")


def _baseline_token(model: nn.Module, baseline_token: int | None, pad_id: int | None) -> int:
    """The token whose embedding fills the non-special positions of ``"keep_special"``: given, else the pad token."""
    if baseline_token is not None:
        return int(baseline_token)
    if pad_id is None:
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
    if pad_id is None:
        raise LightningXAIError(
            "baseline='keep_special' fills the non-special positions with the pad token's embedding, and neither "
            "the modality nor model.config names a pad token: pass baseline_token= (e.g. the unk or eos id)"
        )
    return int(pad_id)


def integrated_gradients(
    model: nn.Module,
    inputs: dict[str, Tensor],
    target: Tensor,
    *,
    steps: int = 20,
    baseline: Baseline = "zero",
    method: Method = "riemann_right",
    special_mask: Tensor | None = None,
    baseline_token: int | None = None,
    pad_id: int | None = None,
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
        steps: ``m``, the quadrature's number of nodes.
        baseline: ``"zero"`` (zero embeddings), a token id whose embedding is the baseline at every position, or
            ``"keep_special"``: the positions of ``special_mask`` keep their own embedding and every other position
            takes the embedding of ``baseline_token`` (default: the pad token; zeros for non-text embeddings).
        method: the quadrature (:data:`METHODS`, :func:`quadrature`); ``"riemann_right"``: the paper's ``k/m``.
        special_mask: ``[B, P]`` embedding positions kept by ``"keep_special"`` (``[CLS]``, ``[SEP]``, padding).
        baseline_token: the id filling the other positions under ``"keep_special"``.
        pad_id: the pad id ``"keep_special"`` falls back to (default ``model.config.pad_token_id``).
        max_batch_size: most interpolated rows per forward.
        embeddings: the input-embedding module (default ``model.get_input_embeddings()``; the family's).

    Returns:
        ``([B, P] IG per embedding position (signed), [B] completeness gap sum(IG) - (y_c(e) - y_c(e')))``.

    Example (captum's settings on a tiny BERT: ``[CLS]``/``[SEP]``/``[PAD]`` keep their embeddings, 0 there):
        >>> import torch
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch
        >>> model, inputs = tiny_bert(), tiny_text_batch()
        >>> special = torch.tensor([[True, False, False, True, True]])
        >>> ig, gap = integrated_gradients(model, inputs, torch.tensor([1]), steps=50, baseline="keep_special",
        ...                                method="gausslegendre", special_mask=special)
        >>> ig[0, [0, 3, 4]].tolist(), bool(gap.abs() < 1e-3)
        ([0.0, 0.0, 0.0], True)
    """
    if steps < 1 or max_batch_size < 1:
        raise ValueError(f"steps and max_batch_size must be >= 1, got {steps} and {max_batch_size}")
    _check_baseline(baseline)
    nodes, node_weights = quadrature(method, steps)
    module = embeddings if embeddings is not None else _embedding_module(model)
    token: int | None = baseline if isinstance(baseline, int) else None
    if baseline == "keep_special":
        if special_mask is None:
            raise ValueError("baseline='keep_special' needs special_mask ([B, P] positions that keep their embedding)")
        if isinstance(module, nn.Embedding):
            token = _baseline_token(model, baseline_token, pad_id)
    if token is not None and not isinstance(module, nn.Embedding):
        raise LightningXAIError("A token-id baseline needs a word-embedding table (text models)")
    batch = target.shape[0]
    device = target.device
    rows = torch.arange(batch, device=device).repeat(steps)  # step-major: row k*B + b
    alphas = nodes.to(device).repeat_interleave(batch)
    weights = None if node_weights is None else node_weights.to(device).repeat_interleave(batch)
    keep = None if baseline != "keep_special" else special_mask.to(device).bool()  # type: ignore[union-attr]
    state: dict[str, Any] = {}

    def make_baseline(output: Tensor) -> Tensor:
        if token is None:
            base = torch.zeros_like(output)
        else:
            base = module.weight.detach()[token].to(output.dtype).expand_as(output)  # type: ignore[index]
        if keep is not None:
            chunk_keep = keep[state["rows"]]
            if chunk_keep.shape != output.shape[:2]:
                raise LightningXAIError(
                    f"special_mask {tuple(keep.shape)} does not match the input embeddings {tuple(output.shape[:2])}"
                )
            base = torch.where(chunk_keep[..., None], output, base)
        return base

    def hook(_module: nn.Module, _args: tuple, full_output: Any) -> Any:
        output = first_tensor(full_output).detach()  # type: ignore[union-attr]
        base = make_baseline(output)
        alpha = state["alpha"].to(output.dtype).view(-1, *([1] * (output.dim() - 1)))
        scaled = (base + alpha * (output - base)).requires_grad_()
        state["scaled"], state["input"], state["base"] = scaled, output, base
        return with_first(full_output, scaled)

    def end_scores(alpha: float) -> Tensor:
        """``[B]`` explained logits at ``e' + alpha (e - e')`` (no gradient)."""
        scores = []
        for start in range(0, batch, max_batch_size):
            index = torch.arange(start, min(start + max_batch_size, batch), device=device)
            state["rows"], state["alpha"] = index, torch.full((index.shape[0],), alpha, device=device)
            logits = logits_of(model(**select(inputs, index)))
            scores.append(logits.gather(1, target[index][:, None])[:, 0].float())
        return torch.cat(scores)

    total: Tensor | None = None
    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), eager_forward(model):  # the interpolation is a hook on the eager embeddings
            for start in range(0, rows.shape[0], max_batch_size):
                index = rows[start : start + max_batch_size]
                state["rows"], state["alpha"] = index, alphas[start : start + max_batch_size]
                logits = logits_of(model(**select(inputs, index)))
                score = logits.gather(1, target[index][:, None])[:, 0]
                (gradient,) = torch.autograd.grad(score.sum(), state["scaled"])
                delta = (state["input"] - state["base"]).float()
                contribution = (gradient.float() * delta).sum(dim=-1)  # [chunk, P]
                if weights is None:
                    contribution = contribution / steps
                else:
                    contribution = contribution * weights[start : start + max_batch_size, None]
                if total is None:
                    total = torch.zeros(batch, *contribution.shape[1:], device=contribution.device)
                total.index_add_(0, index, contribution)
            with torch.no_grad():
                difference = end_scores(1.0) - end_scores(0.0)
    finally:
        handle.remove()
    assert total is not None
    return total, total.sum(dim=1) - difference


class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al., ICML 2017) on the word/patch embeddings (signed).

    Runs its own ``steps`` interpolated passes (batched, chunked by ``max_batch_size`` rows) through a forward
    hook on ``model.get_input_embeddings()`` that replaces its output; prefix tokens of ViT/DeiT get 0.

    Presets: the defaults (``steps=20``, zero baseline, the paper's right Riemann sum) and :meth:`captum` (captum's
    ``n_steps=50`` Gauss-Legendre rule with the baseline of its BERT tutorials: ``[CLS]``/``[SEP]`` kept, ``[PAD]``
    elsewhere); see ``docs/methods/integrated_gradients.md``.

    Args:
        steps: quadrature nodes ``m``.
        baseline: ``"zero"`` (default: all-zero embeddings), a token id (text: e.g. the ``[PAD]`` or ``[MASK]`` id)
            whose embedding replaces every position, or ``"keep_special"``: the pass's special tokens (``[CLS]``,
            ``[SEP]``, ``<s>``, padding: the modality's special ids) keep their own embedding, every other position
            takes the embedding of ``baseline_token`` (default: the modality's pad id, else
            ``model.config.pad_token_id``). Patch embeddings (ViT/DeiT) take zeros (their prefix tokens are added
            after the embedding layer, so they are kept anyway).
        method: the quadrature (:data:`METHODS`): ``"riemann_right"`` (default, the paper's ``k/m``) or captum's
            ``"gausslegendre"``, ``"riemann_left"``, ``"riemann_middle"``, ``"riemann_trapezoid"``.
        baseline_token: the id filling the non-special positions with ``baseline="keep_special"``.
        max_batch_size: most interpolated rows per forward.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> maps = explain(model, inputs, [IntegratedGradients(steps=8)], modality=text)["integrated_gradients"]
        >>> maps.relevance.shape, float(maps.relevance[0, 4])
        (torch.Size([1, 5]), 0.0)
        >>> captum_like = explain(model, inputs, [IntegratedGradients.captum()], modality=text)["integrated_gradients"]
        >>> captum_like.relevance[0, [0, 3]].tolist()  # [CLS] and [SEP] equal their baseline: 0
        [0.0, 0.0]
    """

    name: ClassVar[str] = "integrated_gradients"
    signed: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"own_pass", "input_embeddings"})

    def __init__(
        self,
        steps: int = 20,
        baseline: Baseline = "zero",
        max_batch_size: int = 64,
        method: Method = "riemann_right",
        baseline_token: int | None = None,
    ) -> None:
        if steps < 1 or max_batch_size < 1:
            raise ValueError(f"steps and max_batch_size must be >= 1, got {steps} and {max_batch_size}")
        _check_baseline(baseline)
        quadrature(method, steps)  # validates method and steps
        if baseline_token is not None and baseline != "keep_special":
            raise ValueError("baseline_token is for baseline='keep_special' (pass a token id as baseline= instead)")
        self.steps = int(steps)
        self.baseline: Baseline = baseline
        self.max_batch_size = int(max_batch_size)
        self.method: Method = method
        self.baseline_token = baseline_token

    @classmethod
    def captum(
        cls, steps: int = 50, baseline_token: int | None = None, max_batch_size: int = 64
    ) -> IntegratedGradients:
        """Captum's usual settings: ``n_steps=50`` Gauss-Legendre nodes, special tokens kept, ``[PAD]`` elsewhere.

        Equals captum's ``LayerIntegratedGradients(forward, model.get_input_embeddings()).attribute(input_ids,
        baselines=ref_ids, n_steps=50)`` summed over the hidden dimension, with ``ref_ids`` = the input's special
        tokens and ``[PAD]`` at every other position (captum's BERT tutorials; ferret builds the same baseline).
        Captum's LLM attribution (``TextTokenInput(baselines=0, skip_tokens=...)``) fills with token id 0 instead:
        pass ``baseline_token=0``.

        Example:
            >>> preset = IntegratedGradients.captum()
            >>> preset.steps, preset.baseline, preset.method
            (50, 'keep_special', 'gausslegendre')
        """
        return cls(steps=steps, baseline="keep_special", max_batch_size=max_batch_size, method="gausslegendre",
                   baseline_token=baseline_token)

    def explain(self, forward: ForwardPass) -> Tensor:
        """IG map of the pass's inputs and targets (own interpolated passes)."""
        if forward.model is None:
            raise LightningXAIError("Integrated gradients needs the model (ForwardPass.model) to run its own passes")
        inputs = {key: value.detach() for key, value in forward.inputs.items()}
        special = None
        if self.baseline == "keep_special":
            if forward.input_embeddings is None:
                raise LightningXAIError("baseline='keep_special' needs the pass's input embeddings (their positions)")
            special = forward.special_mask[:, forward.special_mask.shape[1] - forward.input_embeddings.shape[1] :]
        scores, _ = integrated_gradients(
            forward.model,
            inputs,
            forward.target,
            steps=self.steps,
            baseline=self.baseline,
            method=self.method,
            special_mask=special,
            baseline_token=self.baseline_token,
            pad_id=getattr(forward.modality, "pad_id", None),
            max_batch_size=self.max_batch_size,
            embeddings=None if forward.family is None else forward.family.word_embeddings(),
        )
        return _to_tokens(scores, forward.valid_mask.shape[1])
