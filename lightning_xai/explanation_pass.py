"""Explain one batch: one isolated, recorded forward shared by all explainers, then detached maps.

This is the step "family capture -> maps" of the data flow: the model's family (:mod:`lightning_xai.families`)
records the attention, says which row carries each sample's prediction and refuses methods it cannot serve; the
explainers turn the recorded pass into relevance per token. :func:`explain` is also ``lightning_xai.explain``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.capture.base import AttentionCapture, AttentionRecord, eager_forward, first_tensor, with_first
from lightning_xai.errors import LightningXAIError, NonFiniteExplanationError, UnstreamableAttentionError
from lightning_xai.explainers import resolve_explainers
from lightning_xai.explainers.base import Explainer, ForwardPass
from lightning_xai.families import ModelFamily, explainable_model, resolve_family
from lightning_xai.modalities.base import Modality
from lightning_xai.types import Explanation, ModelInputs, logits_of

#: ``"predicted"`` (arg-max class), ``"label"`` (the batch's labels) or a fixed class index.
Target = Literal["predicted", "label"] | int


def resolve_target(target: Target, logits: Tensor, labels: Tensor | None) -> Tensor:
    """Class to explain per row.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.1, 2.0], [3.0, 0.0]])
        >>> resolve_target("predicted", logits, None).tolist(), resolve_target(0, logits, None).tolist()
        ([1, 0], [0, 0])
    """
    if target == "predicted":
        return logits.detach().argmax(dim=-1)
    if target == "label":
        if labels is None:
            raise LightningXAIError(
                "target='label' needs labels, but the batch adapter returned none: use target='predicted' or a "
                "batch adapter that returns the labels."
            )
        return labels.to(device=logits.device, dtype=torch.long).reshape(-1)
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < logits.shape[-1]:
            raise LightningXAIError(f"target={target} is not a class of a model with {logits.shape[-1]} outputs")
        return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    raise ValueError(f"target must be 'predicted', 'label' or a class index, got {target!r}")


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on, also inside Lightning's ``inference_mode`` validation (``trainer.validate()``)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def recorded_input_embeddings(model: nn.Module, module: nn.Module | None = None) -> Iterator[list[Tensor]]:
    """Record the output of ``module`` (default ``model.get_input_embeddings()``) and make it require grad.

    Requiring grad keeps attention differentiable even when every parameter is frozen; the recorded tensor is the
    live input of the rest of the network (gradient x input methods read it). The hook is removed on exit.
    """
    recorded: list[Tensor] = []
    embeddings = module
    if embeddings is None:
        get_embeddings = getattr(model, "get_input_embeddings", None)
        embeddings = get_embeddings() if callable(get_embeddings) else None
    if not isinstance(embeddings, nn.Module):
        yield recorded
        return

    def hook(_module: nn.Module, _args: object, output: Any) -> Any:
        tensor = first_tensor(output)
        if tensor is None or not tensor.is_floating_point():
            return None
        replaced = None if tensor.requires_grad else tensor.detach().requires_grad_()
        recorded.append(tensor if replaced is None else replaced)
        return None if replaced is None else with_first(output, replaced)

    handle = embeddings.register_forward_hook(hook)
    try:
        yield recorded
    finally:
        handle.remove()


def check_target(target: Target, model: nn.Module | None = None) -> None:
    """Refuse a class index the model does not have (at setup, not after a whole run of empty maps).

    Example:
        >>> from lightning_xai.examples import tiny_bert
        >>> check_target(5, tiny_bert(num_labels=2))
        Traceback (most recent call last):
        ...
        ValueError: target=5 is not a class of this model, which has 2 (valid: 0..1, 'predicted' or 'label')
    """
    if not (target in ("predicted", "label") or (isinstance(target, int) and not isinstance(target, bool))):
        raise ValueError(f"target must be 'predicted', 'label' or a class index; got {target!r}")
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if isinstance(target, int) and isinstance(num_labels, int) and not 0 <= target < num_labels:
        raise ValueError(
            f"target={target} is not a class of this model, which has {num_labels} "
            f"(valid: 0..{num_labels - 1}, 'predicted' or 'label')"
        )


#: What only a recorded (eager) pass provides: every layer's maps, their gradients and every layer's output.
RECORDED_ONLY: frozenset[str] = frozenset({"attentions", "attention_gradients", "hidden_states"})
#: What a method reads through the shared pass's autograd graph (a gradient of its logits).
_THROUGH_GRAPH: frozenset[str] = frozenset(
    {"attention_gradients", "attention_outputs", "hidden_states", "head_readout", "input_embeddings"}
)


def streams_attention(explainers: Sequence[Explainer], capture: AttentionCapture | None = None) -> bool:
    """Whether :func:`explain` runs the shared pass of ``explainers`` on the model's sdpa attention (no ``T x T`` map).

    Never when a method needs the recorded maps, their gradients or every layer's output (:data:`RECORDED_ONLY`).
    Otherwise yes when a method asks for each attention call's outputs (``"attention_outputs"``, e.g.
    ``GradSAM(attention="sdpa")``), and, given the model's ``capture``, whenever it can stream: then methods that
    run their own pass (LRP, integrated gradients) or read only the input embeddings (gradient x input) never pay
    for maps nobody reads (issue 13: their memory grows with ``T``, not ``T^2``).

    Example:
        >>> from lightning_xai.explainers import GradientXInput, GradSAM
        >>> streams_attention([GradSAM(attention="sdpa"), GradientXInput()]), streams_attention([GradSAM()])
        (True, False)
        >>> streams_attention([GradientXInput()])  # without the capture: only when a method asks for it
        False
    """
    requirements = [explainer.requirements() for explainer in explainers]
    if any(needs & RECORDED_ONLY for needs in requirements):
        return False
    if any("attention_outputs" in needs for needs in requirements):
        return True
    return capture is not None and capture.streaming_refusal(capture.model) is None


#: What a method reads when it runs its own passes only: the model, the inputs, the family, the target and masks.
_OWN_PASSES_ONLY: frozenset[str] = frozenset({"own_pass", "lrp_rules"})


def may_skip_shared_pass(explainers: Sequence[Explainer]) -> bool:
    """Whether no method of ``explainers`` reads the shared pass (maps, gradients, layer outputs, embeddings).

    Then one method's own pass may stand in for it (:meth:`~lightning_xai.explainers.base.Explainer.
    explain_and_predict`, LRP's): :func:`explain` takes the logits and the target from that pass and runs no forward
    of its own, so ``explain(model, batch, [AttnLRP()])`` costs one patched forward and one backward, as lxt does.

    Example:
        >>> from lightning_xai.explainers import AttnLRP, ConservativeLRP, GradSAM, Random
        >>> may_skip_shared_pass([AttnLRP(), ConservativeLRP(), Random()]), may_skip_shared_pass([AttnLRP(), GradSAM()])
        (True, False)
    """
    return bool(explainers) and all(explainer.requirements() <= _OWN_PASSES_ONLY for explainer in explainers)


def needs_shared_graph(explainers: Sequence[Explainer]) -> bool:
    """Whether a method differentiates the shared pass (else that pass runs without autograd, like a metric forward).

    Methods that run their own pass (LRP, integrated gradients) read only the shared pass's logits and values;
    raw attention, rollout, attention-Shapley's attention game and Random read only values.

    Example:
        >>> from lightning_xai.explainers import AttnLRP, GradientXInput, RawAttention
        >>> needs_shared_graph([AttnLRP(), RawAttention()]), needs_shared_graph([AttnLRP(), GradientXInput()])
        (False, True)
    """
    return any(
        "own_pass" not in needs and needs & _THROUGH_GRAPH
        for needs in (explainer.requirements() for explainer in explainers)
    )


def resolve_modality(
    modality: Modality | str | None, family: ModelFamily, tokenizer: Any | None = None
) -> Modality:
    """The inputs' token bookkeeping: given, or built by the model's family (text needs the tokenizer)."""
    if isinstance(modality, Modality):
        return modality
    if modality is not None and modality != family.modality:
        raise ValueError(
            f"modality={modality!r} does not fit a {type(family.model).__name__} ({family.modality} model family "
            f"{family.name!r}): pass modality={family.modality!r}, a Modality object, or leave it out."
        )
    try:
        return family.build_modality(tokenizer)
    except LightningXAIError as error:
        raise LightningXAIError(
            f"{error} For lightning_xai.explain: pass tokenizer=..., or modality=TextModality.from_tokenizer(...)."
        ) from error


def _check_class_logits(model: nn.Module, logits: Tensor) -> None:
    """Refuse outputs that are not class logits ``[batch, classes]`` (a model without a classification head)."""
    if logits.dim() != 2:
        raise LightningXAIError(
            f"{type(model).__name__} returned outputs of shape {tuple(logits.shape)} where class logits "
            "[batch, classes] were expected: explain a model with a classification head (model_getter=)."
        )


def _shared_forward(
    model: nn.Module,
    inputs: ModelInputs,
    capture: AttentionCapture,
    streamed: bool,
    graph: bool,
    gradient_source: nn.Module | None,
) -> tuple[AttentionRecord, list[Tensor], Tensor]:
    """The shared pass of :func:`explain`: recorded (eager maps) or streamed (sdpa), with or without autograd."""
    recording = capture.stream() if streamed else capture.record()
    autograd = torch.enable_grad() if graph else torch.no_grad()
    with recording as record, recorded_input_embeddings(model, gradient_source) as embeddings, autograd:
        logits = logits_of(model(**inputs))
    return record, embeddings, logits


def explain(
    model: nn.Module,
    inputs: ModelInputs,
    explainers: Sequence[Explainer | str] | Explainer | str,
    *,
    modality: Modality | str | None = None,
    tokenizer: Any | None = None,
    target: Target = "predicted",
    labels: Tensor | None = None,
    family: ModelFamily | None = None,
    errors: dict[str, BaseException] | None = None,
) -> dict[str, Explanation]:
    """Explain a batch with several methods sharing ONE recorded forward (and one backward for attention grads).

    The model is restored afterwards (attention backend, train mode of every module, hooks); no parameter
    ``.grad`` is touched. Works inside ``torch.inference_mode()``. A method the model's family cannot serve (say
    LeGrad on a model without a head read-out) is refused before any forward, never answered with a silent map.

    The shared forward records every layer's attention maps (the model's eager attention) when a method reads
    them; otherwise, where the model's capture can, it runs on the model's sdpa attention and keeps each attention
    call's q, k, v and output instead (:func:`streams_attention`): ``GradSAM(attention="sdpa")``, gradient x input,
    LRP and integrated gradients then never form a ``T x T`` map in it. When no method differentiates the shared
    pass (LRP, integrated gradients, raw attention, Random: :func:`needs_shared_graph`) it runs without autograd.

    Args:
        model: a model of a registered family (see :func:`lightning_xai.families.resolve_family`).
        inputs: keyword inputs of the model's forward, batched (no labels).
        explainers: methods to run: instances or registered names (``"grad_sam"``).
        modality: token bookkeeping (:class:`~lightning_xai.modalities.TextModality` or ``VisionModality``);
            default (or ``"text"``/``"vision"``): built by the model's family (text from ``tokenizer``).
        tokenizer: a text model's tokenizer, when ``modality`` is left to the family.
        target: class to explain: ``"predicted"``, ``"label"`` or a class index.
        labels: ``[B]`` labels, needed for ``target="label"``.
        family: the model's family (resolved when omitted).
        errors: when given, an explainer that raises is recorded here under its name and skipped instead of
            failing the whole batch.

    Returns:
        Method name -> :class:`~lightning_xai.types.Explanation` with ``[B, N]`` float32 relevance on the model's
        device, padding zeroed.

    Raises:
        UnsupportedMethodError: the model's family cannot serve one of ``explainers`` (naming the method, the
            family, the reason and what to do).
    """
    explainers = resolve_explainers(explainers)
    if family is None:
        model = explainable_model(model)  # a causal LM is explained through its CompletionScorer
        family = resolve_family(model)
    family.check(explainers)
    check_target(target, model)
    target = family.explained_target(target)
    modality = resolve_modality(modality, family, tokenizer)
    capture = family.capture()
    # the input embeddings, or where the family has none on the token axis, the embedding output: made to require
    # grad so that attention stays differentiable with frozen parameters
    has_input_embeddings = "input_embeddings" not in family.missing_capabilities()
    gradient_source = family.word_embeddings() if has_input_embeddings else family.embeddings_output()
    # the maps are recorded (eager) only when a method reads them; otherwise the pass runs on sdpa (memory ~ T)
    streamed = streams_attention(explainers, capture)
    asked = any("attention_outputs" in explainer.requirements() for explainer in explainers)
    # without a method that differentiates it, the shared pass only gives the logits (the target) and values
    graph = needs_shared_graph(explainers)
    results: dict[str, Explanation] = {}
    with gradients_enabled(), eager_forward(model):
        cloned = {key: value.clone() for key, value in inputs.items()}  # inference tensors -> autograd tensors
        lead_errors: dict[str, BaseException] | None = None if errors is None else {}
        led = _leading_pass(explainers, model, cloned, family, target, labels, lead_errors)
        if lead_errors:  # failed as the leading pass: recorded, not run again
            errors.update(lead_errors)  # type: ignore[union-attr]
            explainers = [explainer for explainer in explainers if explainer.name not in lead_errors]
        if led is not None:  # a method's own pass gave the logits: no shared forward
            record, embeddings, logits = AttentionRecord(), [], led.logits
        else:
            try:
                record, embeddings, logits = _shared_forward(model, cloned, capture, streamed, graph, gradient_source)
            except UnstreamableAttentionError:
                if asked:  # a method asked for the sdpa pass: its error says what to use instead
                    raise
                # chosen here only to save memory: the model's attention needs what only the recorded pass keeps
                record, embeddings, logits = _shared_forward(model, cloned, capture, False, graph, gradient_source)
        _check_class_logits(model, logits)
        if led is None and not record.attentions and not record.calls:
            raise LightningXAIError(
                f"No attention was recorded during the forward of {type(model).__name__}: its attention layers do not "
                f"call the transformers AttentionInterface, which its family ({family.name}) relies on."
            )
        # the leading pass (LRP) reads its tokens where the shared pass would count them: the embedding output
        num_tokens = led.relevance.shape[1] if led is not None else family.token_count(cloned, record)
        valid, special = modality.token_masks(cloned, num_tokens)
        forward = ForwardPass(
            inputs=cloned,
            logits=logits,
            attentions=record.attentions,
            valid_mask=valid,
            special_mask=special,
            target=led.target if led is not None else resolve_target(target, logits, labels),
            hidden_states=list(record.hidden_states) or None,
            input_embeddings=embeddings[0] if has_input_embeddings and len(embeddings) == 1 else None,
            model=model,
            capture=capture,
            modality=modality,
            family=family,
            query_index=family.prediction_rows(cloned, valid),
            window_layouts=list(record.window_layouts) or None,
            attention_calls=list(record.calls) or None,
        )
        detached_logits = logits.detach().float()
        for explainer in explainers:
            try:
                own = led is not None and explainer is led.method
                relevance = (led.relevance if own else explainer.explain(forward)).detach().float()
                if relevance.shape != valid.shape:
                    raise LightningXAIError(
                        f"{explainer.name} returned relevance of shape {tuple(relevance.shape)}, "
                        f"expected {tuple(valid.shape)}"
                    )
                relevance = relevance.masked_fill(~valid, 0.0)
                if not torch.isfinite(relevance).all():
                    raise NonFiniteExplanationError(f"{explainer.name} produced NaN or infinite relevance")
            except Exception as error:
                if errors is None:
                    raise
                errors[explainer.name] = error
                continue
            results[explainer.name] = Explanation(
                explainer.name, relevance, valid, special, forward.target.detach(), explainer.signed, detached_logits
            )
    return results


@dataclass(frozen=True)
class _LeadingPass:
    """A method's own pass standing in for the shared forward: its map, the logits and the target it explained."""

    method: Explainer
    relevance: Tensor
    logits: Tensor
    target: Tensor


def _leading_pass(
    explainers: Sequence[Explainer],
    model: nn.Module,
    inputs: ModelInputs,
    family: ModelFamily,
    target: Target,
    labels: Tensor | None,
    errors: dict[str, BaseException] | None,
) -> _LeadingPass | None:
    """The first method that explains AND predicts from its own pass, when no method reads the shared pass.

    A method that raises is recorded in ``errors`` (when given) and the next one is tried; None: run the shared pass.
    """
    if not may_skip_shared_pass(explainers):
        return None
    chosen: list[Tensor] = []

    def choose_target(logits: Tensor) -> Tensor:
        _check_class_logits(model, logits)
        chosen.append(resolve_target(target, logits, labels))
        return chosen[-1]

    for explainer in explainers:
        try:
            led = explainer.explain_and_predict(model, inputs, family, choose_target)
        except Exception as error:
            if errors is None:
                raise
            errors[explainer.name] = error
            continue
        if led is not None:
            return _LeadingPass(explainer, led[0], led[1], chosen[-1])
    return None


@dataclass(frozen=True)
class CompletionTokenMaps:
    """Per-completion-token maps of a causal LM (the inseq-style view: one row per completion token).

    Attributes:
        method: registry name of the explainer.
        relevance: ``[B, C, N]`` float32: row ``c`` of sample ``b`` explains the log-probability of its ``c``-th
            completion token alone (zero rows past a sample's completion).
        positions: ``[B, C]`` long, the position of each explained token in the sequence (-1 past the completion).
        content_mask: ``[B, N]`` the prompt tokens the maps rank (as in the completion-level maps).
        signed: whether negative relevance is meaningful.
    """

    method: str
    relevance: Tensor
    positions: Tensor
    content_mask: Tensor
    signed: bool = False


def explain_completion_tokens(
    model: nn.Module,
    inputs: ModelInputs,
    explainers: Sequence[Explainer | str] | Explainer | str,
    *,
    modality: Modality | str | None = None,
    tokenizer: Any | None = None,
    family: ModelFamily | None = None,
    max_tokens: int | None = None,
    rows_per_pass: int | None = None,
    errors: dict[str, BaseException] | None = None,
) -> dict[str, CompletionTokenMaps]:
    """Explain each completion token of a causal LM's SFT batch on its own (one map per completion token).

    Every completion token ``c`` of sample ``b`` becomes a row of one expanded batch whose labels keep that token
    only; :func:`explain` then explains the row's completion, which is that token's teacher-forced
    log-probability (attention-row methods read the row predicting it). For methods linear in the target
    (gradient x input, integrated gradients) the sum of a sample's token maps is its completion map. Each expanded
    row is explained independently, so ``rows_per_pass`` changes the memory, not the maps.

    Args:
        model: a causal LM (``*ForCausalLM``) or its :class:`~lightning_xai.families.CompletionScorer`.
        inputs: the SFT batch's inputs, ``labels`` included (-100 on the prompt and padding).
        explainers: methods to run.
        modality: token bookkeeping (default: built by the family from ``tokenizer``).
        tokenizer: the model's tokenizer, when ``modality`` is left to the family.
        family: the scorer's family (resolved when omitted).
        max_tokens: explain only the first ``max_tokens`` completion tokens of each sample (None: all); the
            others get no row (``positions`` -1).
        rows_per_pass: most expanded rows (completion tokens) per :func:`explain` call (None: all in one).
        errors: as for :func:`explain`: a method that fails in any pass is recorded here and left out of the
            result (the others are kept).

    Returns:
        Method name -> :class:`CompletionTokenMaps`.

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from lightning_xai.families.causal_lm import CompletionTextModality
        >>> lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        ...     num_attention_heads=2, num_key_value_heads=1, vocab_size=20, pad_token_id=0)).eval()
        >>> ids = torch.tensor([[2, 5, 6, 7, 8, 9]])
        >>> batch = {"input_ids": ids, "labels": torch.tensor([[-100, -100, -100, -100, 8, 9]])}
        >>> text = CompletionTextModality(special_ids=[0, 2], pad_id=0, replacement_id=None, removal="attention")
        >>> maps = explain_completion_tokens(lm, batch, ["raw_attention"], modality=text)["raw_attention"]
        >>> maps.relevance.shape, maps.positions.tolist()
        (torch.Size([1, 2, 6]), [[4, 5]])
    """
    from lightning_xai.families.causal_lm import IGNORE_INDEX, LABELS_KEY, CausalLMFamily

    if family is None:
        model = explainable_model(model)
        family = resolve_family(model)
    if not isinstance(family, CausalLMFamily):
        raise LightningXAIError(
            f"explain_completion_tokens explains the completion tokens of a causal LM; a {type(model).__name__} "
            f"(model family {family.name!r}) has none: use explain()."
        )
    labels = inputs.get(LABELS_KEY)
    if labels is None:
        raise LightningXAIError("explain_completion_tokens needs the batch's labels (-100 on the prompt).")
    predicted = labels != IGNORE_INDEX
    predicted[:, 0] = False  # a label at position 0 is predicted by no row (as in HF's loss)
    if max_tokens is not None:
        predicted &= predicted.long().cumsum(dim=1) <= max_tokens
    sample, position = predicted.nonzero(as_tuple=True)  # one expanded row per completion token
    counts = predicted.sum(dim=1)
    width = max(1, int(counts.max())) if counts.numel() else 1
    expanded = {key: value[sample] for key, value in inputs.items()}
    single = torch.full_like(expanded[LABELS_KEY], IGNORE_INDEX)
    rows = torch.arange(len(sample), device=single.device)
    single[rows, position] = labels[sample, position]
    expanded[LABELS_KEY] = single
    step = max(1, len(sample) if rows_per_pass is None else rows_per_pass)
    parts: dict[str, list[Explanation]] = {}
    failed: dict[str, BaseException] = {}
    for begin in range(0, len(sample), step):
        part = {key: value[begin : begin + step] for key, value in expanded.items()}
        found = explain(model, part, explainers, modality=modality, tokenizer=tokenizer, family=family,
                        errors=None if errors is None else failed)
        for name, explanation in found.items():
            parts.setdefault(name, []).append(explanation)
    if errors is not None:
        errors.update(failed)
    maps = {name: torch.cat([p.relevance for p in found]) for name, found in parts.items() if name not in failed}
    signed = {name: found[0].signed for name, found in parts.items()}
    if not len(sample):  # no completion token to explain: every method's maps are empty rows
        resolved = resolve_explainers(explainers)
        maps = {e.name: torch.zeros(0, labels.shape[1], device=labels.device) for e in resolved}
        signed = {e.name: e.signed for e in resolved}
    batch, num_tokens = labels.shape
    slot = (predicted.long().cumsum(dim=1) - 1)[sample, position]  # the token's rank within its completion
    positions = torch.full((batch, width), -1, dtype=torch.long, device=labels.device)
    positions[sample, slot] = position
    content = resolve_modality(modality, family, tokenizer).token_masks(inputs, num_tokens)
    content_mask = content[0] & ~content[1]
    out = {}
    for name, expanded_relevance in maps.items():
        relevance = expanded_relevance.new_zeros(batch, width, num_tokens)
        relevance[sample.to(relevance.device), slot.to(relevance.device)] = expanded_relevance
        out[name] = CompletionTokenMaps(name, relevance, positions, content_mask.to(relevance.device), signed[name])
    return out
