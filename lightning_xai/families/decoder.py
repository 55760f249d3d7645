"""Decoder LLMs with HF's generic sequence-classification head (Llama, Qwen2/3, Mistral, Gemma, Phi-3, ...).

About 50 models of transformers 5 share ``GenericForSequenceClassification``; this family describes them all.

* Prediction row: the rightmost token that is not padding, found from ``input_ids`` and ``config.pad_token_id``
  exactly as the head pools (``modeling_layers.GenericForSequenceClassification``), so left and right padding
  read the same token. In a causal model row 0 attends only to itself: reading it would give one-hot maps.
* Read-out (LeGrad): ``score(final_norm(h[last]))``.
* LRP (AttnLRP's rules, as lxt's ``efficient/models/llama.py``, ``qwen3.py``, ``gemma3.py``): RMSNorm with its
  normalisation a constant (identity rule: the module is ``x`` times a factor), the gated MLP's element-wise
  product by the uniform rule (half the relevance to each factor; CP-LRP: no relevance through the gate), the
  attention's ``q, k / 4`` and ``v / 2`` after the rotary embedding, grouped-query attention by the model's own
  ``repeat_kv``. Relevance is read at the token embeddings (there is no embedding LayerNorm or position table).
* Modality: decoder tokenizers have no mask token, so the perturbation metrics hide removed tokens through the
  attention mask (``removal="attention"``) unless told otherwise. That cannot take out the token the head reads
  (its own row still reads its embedding): warned at setup (:meth:`DecoderFamily.removal_caveat`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers.modeling_layers import GenericForSequenceClassification

from lightning_xai.errors import LightningXAIError
from lightning_xai.families._readout import token_at
from lightning_xai.families.base import LRPRule
from lightning_xai.families.encoders import TextEncoderFamily
from lightning_xai.types import ModelInputs

#: Attribute names of a decoder backbone's final normalisation, in the order they are looked for.
FINAL_NORMS = ("norm", "final_layernorm", "ln_f", "final_norm")


def is_rms_norm(module: nn.Module) -> bool:
    """An RMSNorm by structure: a leaf whose only parameter is a 1-D ``weight`` and that holds an epsilon.

    Its output is its input times a per-position factor, so the identity rule (the factor a constant) is exactly
    AttnLRP's rule for it, whatever the variant (``weight``, ``1 + weight``, float32 upcast).
    """
    parameters = dict(module.named_parameters(recurse=False))
    has_epsilon = any(isinstance(getattr(module, name, None), float) for name in ("variance_epsilon", "eps"))
    return (
        next(module.children(), None) is None
        and set(parameters) == {"weight"}
        and parameters["weight"].dim() == 1
        and has_epsilon
    )


def is_gated_mlp(module: nn.Module) -> bool:
    """A gated MLP by structure: ``down_proj(act(gate) * up)`` from ``gate_proj``/``up_proj`` or ``gate_up_proj``."""
    children = dict(module.named_children())
    return "down_proj" in children and ("gate_proj" in children or "gate_up_proj" in children)


class DecoderFamily(TextEncoderFamily):
    """Decoder sequence classifiers pooled at the last real token (see the module docstring)."""

    name = "decoder"
    examples = "LlamaForSequenceClassification, Qwen2/Qwen3/Mistral/Gemma/Phi3ForSequenceClassification, ..."
    model_classes = (GenericForSequenceClassification,)
    default_removal = "attention"

    def _config(self) -> Any:
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    #: The token the prediction is read at, named for :meth:`removal_caveat`.
    readout_token = "the last real token of each row, where the head pools"

    def removal_caveat(self, removal: str | float | None) -> str | None:
        """Removal through the attention mask cannot take out the token the prediction is read at.

        That token's own row still reads its embedding through the residual stream (measured on the tiny retrieval
        LM: hiding its last prompt token through the mask left the completion's mean probability at 0.983 of 0.984;
        replacing that token's id dropped it to 0.034), so deletion and AOPC curves barely move when it is
        "removed" and under-credit a method that ranks it first.
        """
        if removal != "attention":
            return None
        return (
            f"removal through the attention mask cannot take out {self.readout_token} (its own row still reads its "
            "embedding), so these curves barely move when a method's top token is that one and under-credit it. "
            "What to do: read them with this in mind, or pass removal='unk' where the tokenizer has an unknown "
            "token (the id is replaced, so the token is gone from its own row too)"
        )

    def prediction_rows(self, inputs: ModelInputs, valid_mask: Tensor) -> Tensor:
        """The rightmost non-padding token of each row, as the head pools (left and right padding alike)."""
        pad = self._config().pad_token_id
        ids = inputs.get("input_ids")
        width = valid_mask.shape[1]
        if pad is None or ids is None:  # the head then reads the last position (and needs batch size 1)
            return torch.full((valid_mask.shape[0],), width - 1, dtype=torch.long, device=valid_mask.device)
        positions = torch.arange(width, device=ids.device)
        return ((ids != pad).long() * positions).argmax(dim=-1).to(valid_mask.device)

    def final_norm(self) -> nn.Module | None:
        """The backbone's final normalisation (applied after the last layer, before the score head)."""
        base = self.model.base_model
        return next((getattr(base, n) for n in FINAL_NORMS if isinstance(getattr(base, n, None), nn.Module)), None)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``score(final_norm(h[last]))``."""
        norm = self.final_norm()
        if norm is None:
            raise LightningXAIError(f"{type(self.model).__name__} has no final norm among {FINAL_NORMS}")
        return self.model.score(norm(token_at(hidden, rows)))

    def embeddings_output(self) -> nn.Module:
        """The token embeddings: decoders add no position table or embedding norm before the first layer."""
        return self.word_embeddings()

    def lrp_rule(self, module: nn.Module) -> LRPRule | None:
        """The table's rule, else RMSNorm (identity rule) and gated MLPs (uniform rule), found by structure."""
        rule = super().lrp_rule(module)
        if rule is not None:
            return rule
        if is_rms_norm(module):
            return "norm_identity"
        if is_gated_mlp(module):
            return "gated_mlp"
        return None

    def missing_capabilities(self) -> dict[str, str]:
        """No final norm: no head read-out; attention-logit soft-capping (Gemma 2): no AttnLRP rule, no sdpa pass."""
        missing = super().missing_capabilities()
        if self.final_norm() is None:
            missing["head_readout"] = f"its backbone has no final norm among {FINAL_NORMS}"
        if getattr(self._config(), "attn_logit_softcapping", None) is not None:
            missing["lrp_rules"] = "its attention soft-caps the logits (tanh), which has no LRP rule here or in lxt"
            missing["attention_outputs"] = "its attention soft-caps the logits (tanh), which sdpa does not do"
        return missing
