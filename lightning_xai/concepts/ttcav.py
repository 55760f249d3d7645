"""Attention-weighted token-level TCAV ("TTCAV"): how sensitive a class is to a concept, layer by layer.

Eggen, Lysnæs-Larsen & Strümke (2025, arXiv 2508.08966, method 2; code ``ttcav/cav/*.py``), TCAV (Kim et al.
2018) at token level, weighted by the prediction token's attention. For a concept ``C``, a layer ``l`` and a class
``k``:

1. CAVs ``v`` (:mod:`lightning_xai.concepts.cav`) from the block-``l`` outputs of every real token of the concept's
   examples against negatives (the set's other concepts, or a random set), several per concept;
2. token directional derivatives ``S_t = g_t · v`` with ``g = ∂ logit_k / ∂ h^l`` (the pre-softmax logit, ``h^l``
   the block-``l`` output tokens);
3. attention weights ``a`` = the mean over heads of the prediction row of block ``l``'s own attention (the
   ``[CLS]`` row of an encoder, the last real token of a decoder: the family's
   :meth:`~lightning_xai.families.ModelFamily.prediction_rows`);
4. ``S' = S · (‖a‖₂ / ‖S‖₂ + 1e-8)`` and ``D_t = a_t · S'_t`` (the authors' rescaling, ``1e-8`` included);
5. the score of a CAV = the fraction of class-``k`` samples whose mean of ``D`` over their real tokens is > 0.

Significance: the scores of a concept's CAVs are tested against 0.5 (one-sample t-test, the authors'
``ttcav/t_test.py``) and against the scores of random CAVs (two-sample t-test, TCAV's test); see
:mod:`lightning_xai.concepts.stats`.

The rescaling is a positive factor per sample, so it never changes a score; it sets the magnitudes of the ``D``
heatmaps. Since ``a >= 0``, the sign of ``D_t`` is the sign of ``S_t`` wherever ``a_t > 0``.

Every pass here is scoped: the model's attention backend, train modes and hooks are restored, gradients are taken
with ``torch.autograd.grad`` (no parameter ``.grad`` is written) and no global random number is drawn.

Example:
    >>> import torch
    >>> from lightning_xai.examples import tiny_bert
    >>> model, text = tiny_bert(), {"input_ids": torch.tensor([[2, 7, 9, 3], [2, 8, 9, 3], [2, 7, 7, 3]])}
    >>> zeros = {"input_ids": torch.tensor([[2, 11, 12, 3], [2, 13, 12, 3], [2, 14, 15, 3]])}
    >>> vectors = fit_concept_vectors(model, {"seven": text, "other": zeros}, num_cavs=3, num_random_cavs=2)
    >>> scores = ttcav_scores(model, text, torch.tensor([0, 0, 1]), vectors)
    >>> [(s.concept, s.class_index, s.layer, tuple(s.scores.shape)) for s in scores][:2]
    [('seven', 0, 0, (3,)), ('seven', 0, 1, (3,))]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_xai.capture.base import eager_forward
from lightning_xai.concepts.cav import TokenActivations, concept_cavs, random_cavs
from lightning_xai.concepts.stats import one_sample_t_test, two_sample_t_test
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError
from lightning_xai.explanation_pass import gradients_enabled, recorded_input_embeddings
from lightning_xai.families import ModelFamily, resolve_family
from lightning_xai.modalities.base import Modality
from lightning_xai.types import ModelInputs, logits_of

__all__ = [
    "TTCAV_NEEDS",
    "ConceptVectors",
    "TTCAVScore",
    "TokenSensitivity",
    "attention_weighted",
    "check_family",
    "fit_concept_vectors",
    "layer_activations",
    "positive_fraction",
    "token_sensitivities",
    "ttcav_scores",
]

#: What TTCAV needs from the model's family (keys of :data:`lightning_xai.families.CAPABILITIES`).
TTCAV_NEEDS = frozenset({"attentions", "prediction_row", "hidden_states"})
#: Added to ``‖a‖/‖S‖`` by the authors' code (``ttcav/cav/directional_derivatives.py``).
RESCALE_EPSILON = 1e-8
#: Below this standard deviation of the CAVs' scores the one-sample test is undefined (``ttcav/t_test.py``).
NO_SPREAD = 1e-8


def check_family(family: ModelFamily) -> None:
    """Raise :class:`~lightning_xai.errors.UnsupportedMethodError` when the family cannot serve TTCAV.

    TTCAV needs the block outputs on one token axis, their attention and the prediction row; Swin (windows, merged
    tokens) and BEiT/ModernBERT-style mean-pooled heads (no prediction row) are refused with the reason.
    """
    reason = family.refusal("ttcav", TTCAV_NEEDS)
    if reason is not None:
        raise UnsupportedMethodError(reason)


def _modality(family: ModelFamily, modality: Modality | None, tokenizer: object | None = None) -> Modality:
    if modality is not None:
        return modality
    if family.modality == "text" and tokenizer is None:
        from lightning_xai.modalities import TextModality

        return TextModality([], pad_id=0, replacement_id=None, removal="attention")  # reads the attention mask
    return family.build_modality(tokenizer)


def _chunks(inputs: ModelInputs, batch_size: int) -> list[ModelInputs]:
    size = int(next(iter(inputs.values())).shape[0])
    return [{k: v[start : start + batch_size] for k, v in inputs.items()} for start in range(0, size, batch_size)]


def _on(inputs: ModelInputs, device: torch.device | None) -> ModelInputs:
    return {k: (v.to(device) if device is not None else v).clone() for k, v in inputs.items()}


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def layer_activations(
    model: nn.Module,
    inputs: ModelInputs,
    layers: Sequence[int] | None = None,
    *,
    family: ModelFamily | None = None,
    modality: Modality | None = None,
    batch_size: int = 32,
) -> dict[int, TokenActivations]:
    """The block outputs of every real token of every example, per layer (the CAVs' training rows).

    Args:
        model: a model of a registered family that records its block outputs.
        inputs: the examples' model inputs, batched (padding allowed: only real tokens are kept).
        layers: block indices (0-based; negative counts from the end); None: every block.
        family: the model's family (resolved when omitted).
        modality: token bookkeeping (default: built by the family; text reads the attention mask only).
        batch_size: examples per forward.

    Returns:
        Layer -> :class:`~lightning_xai.concepts.cav.TokenActivations` (float32, on the model's device).

    Example:
        >>> import torch
        >>> from lightning_xai.examples import tiny_bert
        >>> ids = {"input_ids": torch.tensor([[2, 7, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])}
        >>> acts = layer_activations(tiny_bert(), ids, [1])
        >>> tuple(acts[1].values.shape), acts[1].count  # 3 real tokens x hidden 16
        ((3, 16), 1)
    """
    family = family if family is not None else resolve_family(model)
    check_family(family)
    modality = _modality(family, modality)
    device = _device(model)
    parts: dict[int, list[TokenActivations]] = {}
    chosen: list[int] = []
    with torch.no_grad(), eager_forward(model):
        for chunk in _chunks(inputs, batch_size):
            chunk = _on(chunk, device)
            with family.capture().record() as record:
                model(**chunk)
            chosen = _layer_indices(layers, len(record.hidden_states), len(record.attentions), model)
            valid, _special = modality.token_masks(chunk, family.token_count(chunk, record))
            for layer in chosen:
                hidden = record.hidden_states[layer].detach().float()
                parts.setdefault(layer, []).append(TokenActivations.from_hidden(hidden, valid))
    return {layer: TokenActivations.concatenate(parts[layer]) for layer in chosen}


def _layer_indices(layers: Sequence[int] | None, num_hidden: int, num_attentions: int, model: nn.Module) -> list[int]:
    if num_hidden == 0 or num_hidden != num_attentions:
        raise LightningXAIError(
            f"TTCAV pairs each block's output with its own attention, but a forward of {type(model).__name__} "
            f"recorded {num_hidden} block outputs and {num_attentions} attention maps."
        )
    if layers is None:
        return list(range(num_hidden))
    resolved = []
    for layer in layers:
        if not -num_hidden <= int(layer) < num_hidden:
            raise LightningXAIError(f"layer {layer} does not exist: the model has {num_hidden} blocks (0..)")
        resolved.append(int(layer) % num_hidden)
    return resolved


@dataclass(frozen=True)
class TokenSensitivity:
    """Token directional derivatives and attention of one layer, for a batch and K CAVs.

    Attributes:
        derivatives: ``[B, K, N]`` ``S_t = ∂ logit_k / ∂ h_t · v`` per CAV (float32; 0 on padding).
        attention: ``[B, N]`` mean over heads of the prediction row of the layer's attention (0 on padding).
        valid: ``[B, N]`` real tokens.
        target: ``[B]`` the class whose logit was differentiated.
    """

    derivatives: Tensor
    attention: Tensor
    valid: Tensor
    target: Tensor

    @property
    def weighted(self) -> Tensor:
        """``[B, K, N]`` ``D = a · S'`` (:func:`attention_weighted`)."""
        return attention_weighted(self.derivatives, self.attention, self.valid)


def attention_weighted(derivatives: Tensor, attention: Tensor, valid: Tensor | None = None) -> Tensor:
    """``D_t = a_t · S'_t`` with ``S' = S · (‖a‖₂ / ‖S‖₂ + 1e-8)`` per sample and CAV (the authors' rescaling).

    Norms run over the real tokens. A sample whose ``S`` is all zero gets ``D = 0`` (the ratio is undefined).

    Args:
        derivatives: ``[B, K, N]`` token directional derivatives ``S``.
        attention: ``[B, N]`` attention weights ``a``.
        valid: ``[B, N]`` real tokens (default: all).

    Example:
        >>> import torch
        >>> s, a = torch.tensor([[[3.0, -4.0]]]), torch.tensor([[0.6, 0.8]])
        >>> attention_weighted(s, a).round(decimals=4)  # S' = S / 5 (‖a‖ = 1), D = a S'
        tensor([[[ 0.3600, -0.6400]]])
    """
    if valid is not None:
        derivatives = derivatives.masked_fill(~valid[:, None, :], 0.0)
        attention = attention.masked_fill(~valid, 0.0)
    s_norm = derivatives.norm(dim=-1, keepdim=True)  # [B, K, 1]
    a_norm = attention.norm(dim=-1)[:, None, None]  # [B, 1, 1]
    ratio = torch.where(s_norm > 0, a_norm / s_norm.clamp_min(torch.finfo(s_norm.dtype).tiny) + RESCALE_EPSILON, 0.0)
    return attention[:, None, :] * derivatives * ratio


def _token_mean_positive(weighted: Tensor, valid: Tensor) -> Tensor:
    """``[B, K]`` bool: the mean of ``D`` over each sample's real tokens is > 0."""
    return weighted.masked_fill(~valid[:, None, :], 0.0).sum(-1) / valid.sum(-1, keepdim=True).clamp_min(1) > 0


def positive_fraction(weighted: Tensor, valid: Tensor, selected: Tensor | None = None) -> Tensor:
    """``[K]`` the fraction of (selected) samples whose mean of ``D`` over their real tokens is > 0.

    Args:
        weighted: ``[B, K, N]`` ``D`` (or ``S``: the same sign pattern decides).
        valid: ``[B, N]`` real tokens.
        selected: ``[B]`` bool, the samples of the class (default: all).

    Example:
        >>> import torch
        >>> d = torch.tensor([[[1.0, -0.5]], [[-1.0, 0.2]], [[0.1, 0.0]]])
        >>> positive_fraction(d, torch.ones(3, 2, dtype=torch.bool)) * 3  # 2 of 3 samples have a positive mean
        tensor([2.])
    """
    positive = _token_mean_positive(weighted, valid).float()
    if selected is not None:
        positive = positive[selected.bool()]
    if positive.shape[0] == 0:
        raise ValueError("no sample is selected: a score needs at least one sample of the class")
    return positive.mean(0)


def token_sensitivities(
    model: nn.Module,
    inputs: ModelInputs,
    cavs: Mapping[int, Tensor],
    target: Tensor,
    *,
    family: ModelFamily | None = None,
    modality: Modality | None = None,
) -> dict[int, TokenSensitivity]:
    """``S`` and ``a`` of every given layer for one batch: ONE recorded forward and ONE backward.

    The gradient of the summed target logits w.r.t. every chosen block output gives each sample's own gradient
    (samples do not interact in a transformer's eval forward).

    Args:
        model: a model of a registered family.
        inputs: the batch's model inputs.
        cavs: layer -> ``[K, d]`` unit CAVs (every concept's and random CAVs may be stacked).
        target: ``[B]`` class per sample whose pre-softmax logit is differentiated.
        family: the model's family (resolved when omitted).
        modality: token bookkeeping (default: built by the family; text reads the attention mask only).

    Returns:
        Layer -> :class:`TokenSensitivity`.

    Example:
        >>> import torch
        >>> from lightning_xai.examples import tiny_bert
        >>> batch = {"input_ids": torch.tensor([[2, 7, 9, 3]])}
        >>> out = token_sensitivities(tiny_bert(), batch, {1: torch.eye(16)[:3]}, torch.tensor([1]))
        >>> tuple(out[1].derivatives.shape), round(float(out[1].attention.sum()), 4)  # a row of attention sums to 1
        ((1, 3, 4), 1.0)
    """
    family = family if family is not None else resolve_family(model)
    check_family(family)
    modality = _modality(family, modality)
    device = _device(model)
    has_input_embeddings = "input_embeddings" not in family.missing_capabilities()
    gradient_source = family.word_embeddings() if has_input_embeddings else family.embeddings_output()
    with gradients_enabled(), eager_forward(model):
        batch = _on(inputs, device)
        with family.capture().record() as record, recorded_input_embeddings(model, gradient_source):
            logits = logits_of(model(**batch))
        layers = _layer_indices(list(cavs), len(record.hidden_states), len(record.attentions), model)
        valid, _special = modality.token_masks(batch, family.token_count(batch, record))
        target = target.to(device=logits.device, dtype=torch.long).reshape(-1).clone()  # not an inference tensor
        if logits.dim() != 2 or target.shape[0] != logits.shape[0]:
            raise LightningXAIError(
                f"expected class logits [batch, classes] and one target per sample; got logits "
                f"{tuple(logits.shape)} and {target.shape[0]} targets"
            )
        score = logits.gather(1, target[:, None]).sum()
        hidden = [record.hidden_states[layer] for layer in layers]
        grads = torch.autograd.grad(score, hidden, allow_unused=True)
        rows = family.prediction_rows(batch, valid)
        batch_index = torch.arange(valid.shape[0], device=valid.device)
        out: dict[int, TokenSensitivity] = {}
        for key, layer, h, g in zip(cavs, layers, hidden, grads, strict=True):
            g = torch.zeros_like(h) if g is None else g
            v = cavs[key].to(device=g.device, dtype=torch.float32)
            with torch.autocast(g.device.type, enabled=False):  # S in float32 also under mixed precision
                derivatives = torch.einsum("bnd,kd->bkn", g.detach().float(), v)
            derivatives = derivatives.masked_fill(~valid[:, None, :], 0.0)
            attention = _prediction_row(record.attentions[layer].detach().float().mean(1), rows, batch_index)
            out[layer] = TokenSensitivity(derivatives, attention.masked_fill(~valid, 0.0), valid, target.detach())
    return out


def _prediction_row(attention: Tensor, rows: Tensor, batch_index: Tensor) -> Tensor:
    """``[B, N]`` the prediction row of head-mean attention ``[B, N, N]``.

    ``rows`` is the family's :meth:`~lightning_xai.families.ModelFamily.prediction_rows`: one row index per sample,
    or ``[B, N]`` weights over rows for a family whose prediction is read from several (their weighted mean).
    """
    if rows.dim() == 2:
        return torch.einsum("bq,bqk->bk", rows.to(attention.dtype), attention)
    return attention[batch_index, rows.long()]


@dataclass(frozen=True)
class ConceptVectors:
    """The CAVs of one fit: per concept and layer, plus the random CAVs per layer.

    Attributes:
        concepts: concept -> layer -> ``[K, d]`` unit CAVs.
        random: layer -> ``[R, d]`` unit CAVs of random concepts (empty ``[0, d]`` when none were fitted).
    """

    concepts: dict[str, dict[int, Tensor]]
    random: dict[int, Tensor]

    @property
    def layers(self) -> list[int]:
        """The layers, in order."""
        return sorted(self.random)


def fit_concept_vectors(
    model: nn.Module,
    concepts: Mapping[str, ModelInputs],
    negatives: ModelInputs | None = None,
    layers: Sequence[int] | None = None,
    *,
    num_cavs: int = 10,
    num_random_cavs: int = 10,
    seed: int = 0,
    inverse_regularization: float = 1.0,
    family: ModelFamily | None = None,
    modality: Modality | None = None,
    batch_size: int = 32,
) -> ConceptVectors:
    """Fit ``num_cavs`` CAVs per (concept, layer) and ``num_random_cavs`` random CAVs per layer.

    Negatives: ``negatives`` (a random or negative set) when given, else the other concepts of ``concepts``
    (relative CAVs, the authors' setting). Random CAVs (two disjoint random halves of ``negatives``, or of all the
    concepts pooled) give the null distribution of TCAV's two-sample test.

    Args:
        model: a model of a registered family.
        concepts: concept name -> its examples' model inputs.
        negatives: a random/negative set's model inputs, or None for relative CAVs (needs two concepts or more).
        layers: block indices; None: every block.
        num_cavs: CAVs per concept and layer (50 in the paper).
        num_random_cavs: random CAVs per layer (0: no two-sample test).
        seed: seed of the first negative draw (CAV ``i`` uses ``seed + i``; private generators).
        inverse_regularization: the logistic regression's ``C`` (scikit-learn's default 1).
        family: the model's family (resolved when omitted).
        modality: token bookkeeping (default: built by the family).
        batch_size: examples per forward.

    Returns:
        :class:`ConceptVectors`.
    """
    if not concepts:
        raise ValueError("TTCAV needs at least one concept")
    if negatives is None and len(concepts) < 2:
        raise ValueError("relative CAVs (negatives=None) need at least two concepts; pass a negative/random set")
    if num_cavs < 1 or num_random_cavs < 0:
        raise ValueError(f"num_cavs must be >= 1 and num_random_cavs >= 0; got {num_cavs}, {num_random_cavs}")
    family = family if family is not None else resolve_family(model)
    acts = {
        name: layer_activations(model, inputs, layers, family=family, modality=modality, batch_size=batch_size)
        for name, inputs in concepts.items()
    }
    negative_acts = (
        None
        if negatives is None
        else layer_activations(model, negatives, layers, family=family, modality=modality, batch_size=batch_size)
    )
    chosen = list(next(iter(acts.values())))
    fitted: dict[str, dict[int, Tensor]] = {name: {} for name in concepts}
    random: dict[int, Tensor] = {}
    options = {"inverse_regularization": inverse_regularization}
    for layer in chosen:
        for name in concepts:
            if negative_acts is not None:
                pool = negative_acts[layer]
            else:
                pool = TokenActivations.concatenate([acts[other][layer] for other in concepts if other != name])
            fitted[name][layer] = concept_cavs(acts[name][layer], pool, num_cavs, seed=seed, **options)
        if num_random_cavs > 0:
            pool = (
                negative_acts[layer]
                if negative_acts is not None
                else TokenActivations.concatenate([acts[name][layer] for name in concepts])
            )
            size = max(acts[name][layer].count for name in concepts)
            random[layer] = random_cavs(pool, num_random_cavs, size, seed=seed + 1_000_003, **options)
        else:
            values = acts[next(iter(concepts))][layer].values
            random[layer] = values.new_zeros(0, values.shape[1])  # on the CAVs' device
    return ConceptVectors(fitted, random)


@dataclass(frozen=True)
class TTCAVScore:
    """TTCAV of one (concept, class, layer).

    Attributes:
        concept: the concept's name.
        class_index: the class ``k``.
        layer: the block index.
        scores: ``[K]`` the score of each of the concept's CAVs.
        random_scores: ``[R]`` the scores of the random CAVs (empty when none were fitted).
        num_samples: class-``k`` samples scored.
        p_value: two-sided one-sample t-test of ``scores`` against 0.5; NaN with fewer than 2 CAVs or when the
            scores' standard deviation is below ``1e-8`` (the authors' ``t_test.py``: every CAV scores the same).
        p_value_random: two-sided two-sample t-test of ``scores`` against ``random_scores`` (NaN when undefined).
    """

    concept: str
    class_index: int
    layer: int
    scores: Tensor
    random_scores: Tensor
    num_samples: int
    p_value: float = field(init=False)
    p_value_random: float = field(init=False)

    def __post_init__(self) -> None:
        scores, random = self.scores.tolist(), self.random_scores.tolist()
        # as the authors' t_test.py: undefined when the CAVs' scores do not spread (all equal, say all 1.0)
        spread = len(scores) >= 2 and float(self.scores.double().std(unbiased=False)) >= NO_SPREAD
        one = one_sample_t_test(scores, 0.5).p_value if spread else math.nan
        two = two_sample_t_test(scores, random).p_value if len(scores) >= 2 and len(random) >= 2 else math.nan
        object.__setattr__(self, "p_value", one)
        object.__setattr__(self, "p_value_random", two)

    @property
    def score(self) -> float:
        """The mean score over the concept's CAVs."""
        return float(self.scores.mean())


def ttcav_scores(
    model: nn.Module,
    inputs: ModelInputs,
    classes: Tensor,
    vectors: ConceptVectors,
    *,
    family: ModelFamily | None = None,
    modality: Modality | None = None,
    batch_size: int = 32,
) -> list[TTCAVScore]:
    """TTCAV of every concept, class and layer of ``vectors`` on the samples ``inputs`` of classes ``classes``.

    Each sample is scored for its own class ``k`` (the gradient of logit ``k``), as the authors score the images of
    the target class; a class without samples gets no score.

    Args:
        model: a model of a registered family.
        inputs: the probe samples' model inputs.
        classes: ``[B]`` each sample's class (its label, or its prediction).
        vectors: the fitted CAVs (:func:`fit_concept_vectors`).
        family: the model's family (resolved when omitted).
        modality: token bookkeeping (default: built by the family).
        batch_size: samples per forward and backward.

    Returns:
        One :class:`TTCAVScore` per (concept, class, layer), concepts in order, then classes, then layers.
    """
    family = family if family is not None else resolve_family(model)
    classes = classes.reshape(-1).long().cpu()
    layers = vectors.layers
    names = list(vectors.concepts)
    counts = [vectors.concepts[name][layers[0]].shape[0] for name in names]
    stacked = {
        layer: torch.cat([*(vectors.concepts[n][layer] for n in names), vectors.random[layer].float()])
        for layer in layers
    }
    positive: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for start in range(0, classes.shape[0], batch_size):
        chunk = {k: v[start : start + batch_size] for k, v in inputs.items()}
        target = classes[start : start + batch_size]
        sensitivity = token_sensitivities(model, chunk, stacked, target, family=family, modality=modality)
        for layer in layers:
            s = sensitivity[layer]
            positive[layer].append(_token_mean_positive(s.weighted, s.valid).float().cpu())  # [b, K_total]
    results: list[TTCAVScore] = []
    table = {layer: torch.cat(positive[layer]) for layer in layers}
    for index, name in enumerate(names):
        offset = sum(counts[:index])
        for k in sorted(set(classes.tolist())):
            selected = classes == k
            for layer in layers:
                fraction = table[layer][selected].mean(0)
                results.append(
                    TTCAVScore(
                        name,
                        int(k),
                        layer,
                        fraction[offset : offset + counts[index]],
                        fraction[sum(counts) :],
                        int(selected.sum()),
                    )
                )
    return results
