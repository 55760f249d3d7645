r"""Causal language models (any HF ``*ForCausalLM``) explained for the completion of a supervised fine-tuning batch.

A causal LM has no class logits. :class:`CompletionScorer` wraps one (found by structure: a ``GenerationMixin``
with a linear output embedding, not an encoder-decoder) into a two-output model of the standard SFT batch
``{input_ids, attention_mask, labels}``, ``labels == -100`` on the prompt (and padding), as HF's loss reads it:
logits row ``t`` predicts ``labels[t + 1]``. With :math:`C = \{t + 1 : \mathrm{labels}_{t+1} \neq -100\}` the
``n = |C|`` completion tokens:

.. math::

    S = \sum_{t+1 \in C} \log p(\mathrm{labels}_{t+1} \mid x_{\le t}), \qquad
    \bar p = \exp(S / n), \qquad
    \mathrm{logits} = \big[\, S - \log\tfrac{\bar p}{1 - \bar p},\; S \,\big]

* Column 1 (``"completion"``) is the **explained target**: the summed teacher-forced log-probability ``S`` of the
  completion tokens. Every gradient method differentiates it; column 0 carries no gradient (detached).
* The **perturbation metrics** score ``softmax(logits)[1] = p̄``: the geometric mean of the completion tokens'
  probabilities, ``exp`` of the completion's MEAN log-probability (``score="prob"``, the default; log-odds reads
  ``log p̄``, the mean log-probability itself; ``score="logit"`` reads ``S``). The mean keeps completions of
  different lengths on one scale.
* **Perturbations touch the prompt only**: completion tokens are special tokens of the modality
  (:class:`CompletionTextModality`), so they are never ranked, removed or inserted, and the heatmaps show the
  prompt. The default removal hides prompt tokens through the attention mask (decoder tokenizers have no mask
  token); positions are unchanged.
* **Attention-row methods read the completion rows**: the rows ``t`` that predict completion tokens, averaged with
  equal weights (:meth:`CausalLMFamily.prediction_rows` returns those weights ``[B, N]``; raw attention, rollout,
  GAE and attention-Shapley's ``"cls"`` game read the weighted mean of the rows, never row 0).
* **LeGrad** reads every layer out through the final norm and ``lm_head`` (the logit lens, nostalgebraist 2020):
  the layer's ``S`` from ``lm_head(norm(h^l))``.
* **LRP** (CP-LRP, AttnLRP) explains the summed pre-softmax logits of the completion tokens,
  ``sum_t z_t[labels_{t+1}]``, as lxt explains a token's logit (Achtibat et al. 2024); the log-softmax has no LRP
  rule, so its normalisation is not propagated.

A sample without completion tokens (every label ``-100``) has nothing to explain: it holds no content token (every
metric skips it), its maps are zero, and the monitor warns and counts it as skipped.

Example:
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
    ...     num_attention_heads=2, num_key_value_heads=1, vocab_size=20, pad_token_id=0)).eval()
    >>> scorer = CompletionScorer(lm)
    >>> ids = torch.tensor([[5, 6, 7, 8, 9]])
    >>> labels = torch.tensor([[-100, -100, -100, 8, 9]])  # prompt "5 6 7", completion "8 9"
    >>> out = scorer(input_ids=ids, labels=labels).logits
    >>> loss = lm(input_ids=ids, labels=labels).loss  # HF's mean negative log-likelihood of the completion
    >>> torch.allclose(out[0, 1], -2 * loss), torch.allclose(out.softmax(-1)[0, 1], (-loss).exp())
    (True, True)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from lightning_xai.adapters import AdaptedBatch
from lightning_xai.errors import BatchFormatError, LightningXAIError
from lightning_xai.families.decoder import FINAL_NORMS, DecoderFamily
from lightning_xai.families.peft_models import unwrap_peft
from lightning_xai.modalities.text import TextModality
from lightning_xai.types import ModelInputs

#: The label value HF's loss ignores: the prompt and padding of an SFT batch.
IGNORE_INDEX = -100
#: The input key of the SFT labels (``[B, T]``, ``-100`` on the prompt).
LABELS_KEY = "labels"
#: Class names of the scorer's two outputs.
COMPLETION_LABELS = {0: "other", 1: "completion"}
#: The explained output.
COMPLETION = 1
#: Config attributes of causal LMs whose logits are not ``lm_head(norm(h))`` (a scale or a soft cap).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")

Explained = Literal["log_prob", "logit"]


def is_causal_lm(model: nn.Module) -> bool:
    """A decoder-only language model, found by structure, never by class name.

    A ``PreTrainedModel`` and ``GenerationMixin`` whose output embedding (``lm_head``) is a linear layer, without an
    encoder-decoder config; or a PEFT wrapper (``PeftModel``, e.g. LoRA) of one (its base model is explained, with
    the adapters active: :mod:`lightning_xai.families.peft_models`).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
        >>> config = LlamaConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      vocab_size=10)
        >>> is_causal_lm(LlamaForCausalLM(config)), is_causal_lm(LlamaForSequenceClassification(config))
        (True, False)
    """
    decoder = _generative_decoder(model)
    if decoder is None:
        return False
    get_output = getattr(decoder, "get_output_embeddings", None)
    return callable(get_output) and isinstance(get_output(), nn.Linear)


def _generative_decoder(model: nn.Module) -> PreTrainedModel | None:
    """``model`` (its PEFT base model) when it is a generative decoder-only ``PreTrainedModel``, else None."""
    model = unwrap_peft(model)
    if not isinstance(model, PreTrainedModel) or not isinstance(model, GenerationMixin):
        return None
    if isinstance(model, CompletionScorer) or getattr(model.config, "is_encoder_decoder", False):
        return None
    return model


def head_refusal(model: nn.Module) -> str | None:
    """Why a generative decoder cannot be explained as a causal LM: its output embedding is not a linear ``lm_head``.

    A ``PreTrainedModel`` and ``GenerationMixin`` (not an encoder-decoder) whose ``get_output_embeddings()`` is
    None (no ``lm_head``) or not an ``nn.Linear`` (a wrapped, quantised or custom head) has no class logits, and
    the completion's log-probability, the logit lens and the LRP rules all read ``lm_head`` as one linear layer:
    refused with what to do, before any forward. None for every other model (a causal LM with a linear head
    included).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> lm = LlamaForCausalLM(LlamaConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
        ...                                   num_attention_heads=2, vocab_size=10))
        >>> head_refusal(lm) is None
        True
        >>> lm.lm_head = torch.nn.Sequential(lm.lm_head)
        >>> print(head_refusal(lm).split(":")[0].split("is a ")[-1])
        Sequential, not a torch.nn.Linear
    """
    decoder = _generative_decoder(model)
    if decoder is None:
        return None
    get_output = getattr(decoder, "get_output_embeddings", None)
    try:
        head = get_output() if callable(get_output) else None
    except (NotImplementedError, AttributeError):
        head = None
    if isinstance(head, nn.Linear):
        return None
    found = "None (no lm_head)" if head is None else f"a {type(head).__name__}, not a torch.nn.Linear"
    return (
        f"A {type(decoder).__name__} is a generative decoder, but its output embedding (get_output_embeddings()) is "
        f"{found}: it has no class logits, and explaining it as a causal LM (lightning_xai.families.CompletionScorer) "
        "reads the completion's log-probabilities, the logit lens and the LRP rules through a linear lm_head. What "
        "to do: explain the model with its plain nn.Linear lm_head (before wrapping, replacing or quantising it; "
        "get_output_embeddings() must return it), or pass model_getter= returning a model with class logits "
        "(e.g. a *ForSequenceClassification)."
    )


def completion_rows(labels: Tensor) -> Tensor:
    """``[B, T]`` bool: the rows ``t`` whose logits predict a completion token (``labels[:, t + 1] != -100``).

    Example:
        >>> completion_rows(torch.tensor([[-100, -100, 4, 5, -100]])).tolist()
        [[False, True, True, False, False]]
    """
    rows = torch.zeros_like(labels, dtype=torch.bool)
    rows[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return rows


def completion_scores(lm_logits: Tensor, labels: Tensor, explained: Explained = "log_prob") -> Tensor:
    """``[B, 2]`` scores of the completions from a causal LM's logits ``[B, T, V]`` (see the module docstring).

    Args:
        lm_logits: the language model's logits (row ``t`` predicts token ``t + 1``).
        labels: ``[B, T]`` SFT labels, ``-100`` on the prompt and padding.
        explained: column 1 holds the summed log-probabilities (``"log_prob"``) or the summed pre-softmax logits of
            the completion tokens (``"logit"``, what LRP explains). Column 0 is always ``S - logit(p̄)`` (detached),
            so that ``softmax[1] = p̄``.

    Returns:
        ``[B, 2]`` float32; NaN in column 0 for a row without completion tokens.

    Example:
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens: log p = -log 4 for each token
        >>> scores = completion_scores(logits, torch.tensor([[-100, 1, 2]]))
        >>> round(float(scores[0, 1]), 4), round(float(scores.softmax(-1)[0, 1]), 4)
        (-2.7726, 0.25)
    """
    if labels.shape != lm_logits.shape[:2]:
        raise BatchFormatError(
            f"labels {tuple(labels.shape)} do not match the sequence {tuple(lm_logits.shape[:2])}: give one label "
            "per token (-100 on the prompt and padding), as HF's causal-LM loss reads them."
        )
    rows = completion_rows(labels)
    targets = torch.zeros_like(labels)
    targets[:, :-1] = labels[:, 1:].clamp_min(0)
    logits = lm_logits.float()  # half-precision logits are summed in float32
    picked = logits.gather(-1, targets[..., None])[..., 0]  # z_t[labels_{t+1}]
    log_probs = picked - torch.logsumexp(logits, dim=-1)
    weights = rows.float()
    total = (log_probs * weights).sum(dim=1)
    with torch.no_grad():
        mean = (total / weights.sum(dim=1)).clamp_max(0)  # NaN without completion tokens
        log_rest = torch.log(-torch.expm1(mean)).clamp_min(torch.finfo(torch.float32).min / 4)  # log(1 - p̄)
        other = total - mean + log_rest
    explained_column = total if explained == "log_prob" else (picked * weights).sum(dim=1)
    return torch.stack([other, explained_column], dim=1)


class CompletionScorer(PreTrainedModel):
    """A causal LM as a two-output model: the completion's summed log-probability and ``p̄`` (module docstring).

    The language model is a sub-module (shared, not copied: training it is seen here), so hooks, attention
    backends and LRP rules act on it. Its own config is a copy of the LM's with the two outputs' names.

    Args:
        model: any HF ``*ForCausalLM`` (see :func:`is_causal_lm`), or a PEFT wrapper of one (``PeftModel`` with
            LoRA adapters, ...): the scorer then holds the wrapper's base model, whose injected adapter layers
            stay active (nothing is merged or copied).

    Example:
        >>> from transformers import Qwen2Config, Qwen2ForCausalLM
        >>> lm = Qwen2ForCausalLM(Qwen2Config(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        ...     num_attention_heads=2, num_key_value_heads=1, vocab_size=20))
        >>> scorer = CompletionScorer(lm)
        >>> scorer.lm is lm, scorer.config.id2label
        (True, {0: 'other', 1: 'completion'})
    """

    base_model_prefix = "lm"
    _supports_attention_backend = True
    _supports_sdpa = True

    def __init__(self, model: PreTrainedModel) -> None:
        model = unwrap_peft(model)
        if not is_causal_lm(model):
            reason = head_refusal(model)
            raise TypeError(
                reason
                if reason is not None
                else "CompletionScorer wraps a HF causal language model (a GenerationMixin with a linear lm_head); "
                f"got {type(model).__name__}"
            )
        config = copy.copy(model.config)  # own names; the LM's modules keep reading the LM's config
        config.id2label = dict(COMPLETION_LABELS)
        config.label2id = {name: index for index, name in COMPLETION_LABELS.items()}
        super().__init__(config)
        self.lm = model
        self._explained: Explained = "log_prob"

    def get_input_embeddings(self) -> nn.Module:
        """The LM's token embeddings."""
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        """The LM's ``lm_head``."""
        return self.lm.get_output_embeddings()

    @contextmanager
    def explaining_logits(self) -> Iterator[None]:
        """Inside, column 1 is the summed pre-softmax logits of the completion tokens (LRP's target, as lxt's)."""
        previous, self._explained = self._explained, "logit"
        try:
            yield
        finally:
            self._explained = previous

    def scores(self, lm_logits: Tensor, labels: Tensor) -> Tensor:
        """:func:`completion_scores` with this scorer's current explained quantity."""
        return completion_scores(lm_logits, labels, self._explained)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None, **kwargs: Any
    ) -> SequenceClassifierOutput:
        """``[B, 2]`` completion scores of an SFT batch (``labels``: ``-100`` on the prompt and padding)."""
        if labels is None:
            raise BatchFormatError(
                "Explaining a causal LM needs the batch's labels ([B, T], -100 on the prompt and padding, the "
                "standard SFT format): they say which tokens are the completion. Keep 'labels' in the batch, or pass "
                "ExplanationMonitor(batch_adapter=...) returning AdaptedBatch(inputs={'input_ids': ..., "
                "'attention_mask': ..., 'labels': ...})."
            )
        lm_logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        return SequenceClassifierOutput(logits=self.scores(lm_logits, labels.to(lm_logits.device)))


class CompletionTextModality(TextModality):
    """Text of an SFT batch: the completion tokens (``labels != -100``) are special, never ranked or removed.

    A row without completion tokens holds no content token at all (nothing to explain: every metric skips it).
    Collation pads ``labels`` with ``-100``.

    Example:
        >>> text = CompletionTextModality(special_ids=[0, 2], pad_id=0, replacement_id=None, removal="attention")
        >>> inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 8]]), "attention_mask": torch.ones(1, 5).long(),
        ...           "labels": torch.tensor([[-100, -100, -100, 7, 8]])}
        >>> valid, special = text.token_masks(inputs, 5)
        >>> (valid & ~special).int().tolist()  # the prompt's words only
        [[0, 1, 1, 0, 0]]
    """

    def variant(self, removal: str) -> CompletionTextModality:
        """A copy that removes tokens with ``removal``."""
        return CompletionTextModality(
            self.special_ids.tolist(),
            self.pad_id,
            self.replacement_id,
            self.tokenizer,
            removal,  # type: ignore[arg-type]
            self.token_ids,
        )

    def token_masks(self, inputs: ModelInputs, num_tokens: int) -> tuple[Tensor, Tensor]:
        """Valid = attention mask; special = special ids, padding, completion tokens, and all of a row without any."""
        valid, special = super().token_masks(inputs, num_tokens)
        labels = inputs.get(LABELS_KEY)
        if labels is None:
            return valid, special
        completion = labels.to(special.device) != IGNORE_INDEX
        empty = ~completion_rows(labels).any(dim=1).to(special.device)
        return valid, special | completion | empty[:, None]

    def collate(self, parts: Sequence[ModelInputs]) -> ModelInputs:
        """:meth:`TextModality.collate` with ``labels`` padded with -100 (padding is never a completion token).

        As there, padding is marked by the attention mask, never by the pad id (a Llama tokenizer has no pad
        token: its EOS, else 0; see :meth:`CausalLMFamily.build_modality`).
        """
        width = max(part["input_ids"].shape[1] for part in parts)
        padded = []
        for part in parts:
            if LABELS_KEY in part:
                labels = part[LABELS_KEY]
                part = {**part, LABELS_KEY: nn.functional.pad(labels, (0, width - labels.shape[1]), value=IGNORE_INDEX)}
            padded.append(part)
        return super().collate(padded)


class CausalLMFamily(DecoderFamily):
    """Causal LMs through :class:`CompletionScorer` (see the module docstring)."""

    name = "causal_lm"
    examples = "CompletionScorer(any *ForCausalLM: Llama, Qwen2/3, Mistral, Gemma, Phi-3, ...)"
    model_classes = (CompletionScorer,)
    #: The completion column: explained whatever target is asked ("predicted" and "label" mean nothing here).
    explained_class: ClassVar[int | None] = COMPLETION

    def _lm(self) -> PreTrainedModel:
        return self.model.lm

    def final_norm(self) -> nn.Module | None:
        """The LM backbone's final normalisation."""
        base = self._lm().base_model
        return next((getattr(base, n) for n in FINAL_NORMS if isinstance(getattr(base, n, None), nn.Module)), None)

    def prediction_rows(self, inputs: ModelInputs, valid_mask: Tensor) -> Tensor:
        """``[B, N]`` weights: ``1 / n`` on the ``n`` rows predicting completion tokens, 0 elsewhere."""
        labels = inputs.get(LABELS_KEY)
        if labels is None:
            raise BatchFormatError("The causal-LM family needs the batch's labels to find the completion rows.")
        rows = (completion_rows(labels) & valid_mask.to(labels.device)).float()
        return (rows / rows.sum(dim=1, keepdim=True).clamp_min(1)).to(valid_mask.device)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """Not defined without the completion tokens: use :meth:`layer_logits` (it has the pass's labels)."""
        raise LightningXAIError(
            "A causal LM's read-out needs the completion tokens: call CausalLMFamily.layer_logits(hidden, rows, "
            "inputs) with the batch's labels."
        )

    def layer_logits(self, hidden: Tensor, rows: Tensor, inputs: ModelInputs) -> Tensor:
        """The logit lens: :func:`completion_scores` of ``lm_head(final_norm(h))`` (LeGrad's per-layer read-out)."""
        norm = self.final_norm()
        if norm is None:
            raise LightningXAIError(f"{type(self._lm()).__name__} has no final norm among {FINAL_NORMS}")
        lm_logits = self.model.get_output_embeddings()(norm(hidden))
        return self.model.scores(lm_logits, inputs[LABELS_KEY].to(lm_logits.device))

    def lrp_target(self) -> Any:
        """LRP explains the summed pre-softmax logits of the completion tokens (as lxt explains a token's logit)."""
        return self.model.explaining_logits()

    #: For :meth:`~lightning_xai.families.decoder.DecoderFamily.removal_caveat`.
    readout_token = "the last prompt token, whose own row predicts the first completion token"

    def build_modality(self, tokenizer: Any | None = None, removal: str | float | None = None) -> TextModality:
        """:class:`CompletionTextModality` from the tokenizer (removal through the attention mask by default)."""
        base = super().build_modality(tokenizer, removal)
        return CompletionTextModality(
            base.special_ids.tolist(), base.pad_id, base.replacement_id, base.tokenizer, base.removal, base.token_ids
        )

    def adapt_batch(self, batch: AdaptedBatch) -> AdaptedBatch:
        """The SFT labels ``[B, T]`` are model inputs here (they say which tokens are the completion)."""
        if LABELS_KEY in batch.inputs:
            return batch
        ids, labels = batch.inputs.get("input_ids"), batch.labels
        if ids is None or labels is None or labels.shape != ids.shape:
            found = "no labels" if labels is None else f"labels of shape {tuple(labels.shape)}"
            raise BatchFormatError(
                f"A causal-LM batch needs token labels of the shape of input_ids (-100 on the prompt and padding, "
                f"the standard SFT format); found {found}. What to do: keep 'labels' in the validation batch, or "
                "pass ExplanationMonitor(batch_adapter=...) returning AdaptedBatch(inputs={'input_ids': ..., "
                "'attention_mask': ..., 'labels': ...})."
            )
        return AdaptedBatch({**batch.inputs, LABELS_KEY: labels}, None, batch.rationale)

    def skipped_rows(self, inputs: ModelInputs) -> tuple[Tensor, str] | None:
        """Rows without completion tokens (every label -100), with the reason and what to do."""
        labels = inputs.get(LABELS_KEY)
        if labels is None:
            return None
        return (
            ~completion_rows(labels).any(dim=1),
            "it has no completion tokens (every label is -100, or only the first one is not), so there is no "
            "completion to explain. What to do: check the SFT collator masks only the prompt with -100 and that "
            "truncation keeps the completion",
        )

    def missing_capabilities(self) -> dict[str, str]:
        """The decoder's, plus: logits not ``lm_head(norm(h))`` (a soft cap or scale): no logit lens, no LRP rule."""
        missing = super().missing_capabilities()
        transforms = [name for name in LOGIT_TRANSFORMS if getattr(self._config(), name, None) not in (None, 1, 1.0)]
        if transforms:
            why = f"its logits are transformed after lm_head ({', '.join(transforms)})"
            missing["head_readout"] = why + ", which the logit lens does not reproduce"
            missing.setdefault("lrp_rules", why + ", which has no LRP rule here or in lxt")
        return missing


def explainable_model(model: nn.Module) -> nn.Module:
    """``model`` itself, or a causal LM wrapped in a :class:`CompletionScorer` (what the monitor explains).

    A PEFT wrapper is replaced by its base model first (adapters active; see
    :mod:`lightning_xai.families.peft_models`).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> lm = LlamaForCausalLM(LlamaConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
        ...                                   num_attention_heads=2, vocab_size=10))
        >>> type(explainable_model(lm)).__name__, explainable_model(torch.nn.Linear(1, 1))
        ('CompletionScorer', Linear(in_features=1, out_features=1, bias=True))
    """
    model = unwrap_peft(model)
    return CompletionScorer(model) if is_causal_lm(model) else model
