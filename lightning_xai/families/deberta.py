"""DeBERTa-v2/v3 (``DebertaV2ForSequenceClassification``): disentangled attention outside the AttentionInterface.

Capture: scoped module hooks on every ``DisentangledSelfAttention`` (:class:`~lightning_xai.capture.hooks.
ModuleHookCapture`): its probabilities include the content-to-position and position-to-content terms, as the model
uses them. Prediction row: ``[CLS]`` (row 0, the context pooler's token); read-out ``classifier(pooler(h[CLS]))``.
LRP is refused: the attention scores, with their relative-position terms, are computed inside the module, so the
AH rule (CP-LRP) and the uniform rule (AttnLRP) cannot be applied there (they would silently be plain gradients).
With DeBERTa-v3's embeddings (``position_biased_input=False``, no token types) nothing is added to a token's
embedding before its LayerNorm, so gradient x input and integrated gradients are refused as for ModernBERT.
"""

from __future__ import annotations

from torch import Tensor
from transformers import DebertaV2ForSequenceClassification
from transformers.activations import ACT2FN
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Layer, DisentangledSelfAttention

from lightning_xai.capture.hooks import ModuleHookCapture
from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class DebertaV2Family(TextEncoderFamily):
    """DeBERTa-v2/v3 sequence classifiers (see the module docstring)."""

    name = "deberta_v2"
    examples = "DebertaV2ForSequenceClassification (DeBERTa-v2, DeBERTa-v3)"
    model_classes = (DebertaV2ForSequenceClassification,)
    capture_class = ModuleHookCapture
    unsupported = {
        "lrp_rules": "its disentangled attention scores (with the c2p/p2c relative-position terms) are computed "
        "inside DisentangledSelfAttention, where the AH and uniform attention rules cannot be applied"
    }

    def capture(self) -> ModuleHookCapture:
        """Hooks on every disentangled self-attention (probabilities) and every layer (outputs)."""
        modules = list(self.model.modules())
        return ModuleHookCapture(
            self.model,
            [m for m in modules if isinstance(m, DisentangledSelfAttention)],
            [m for m in modules if isinstance(m, DebertaV2Layer)],
        )

    def missing_capabilities(self) -> dict[str, str]:
        """DeBERTa-v3's embeddings (no absolute positions, no token types) are LayerNorm-ed as they are."""
        missing = super().missing_capabilities()
        embeddings = self.model.deberta.embeddings
        if not embeddings.position_biased_input and embeddings.token_type_embeddings is None:
            missing["input_embeddings"] = (
                "its token embeddings are LayerNorm-ed before anything is added (position_biased_input=False, no "
                "token types: DeBERTa-v3), so the model is scale-invariant in each input embedding and gradient x "
                "input shows only the LayerNorm's epsilon"
            )
        return missing

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(act(pooler.dense(h[CLS])))`` (the pooler's and head's dropouts skipped)."""
        pooler = self.model.pooler
        pooled = ACT2FN[pooler.config.pooler_hidden_act](pooler.dense(token_at(hidden, rows)))
        return self.model.classifier(pooled)
