"""ModernBERT (``ModernBertForSequenceClassification``): RoPE, alternating local/global attention, a GLU MLP.

The head pools ``classifier_pooling="cls"`` (row 0, the default) or ``"mean"`` (the masked mean of all tokens):
with mean pooling no single row carries the prediction, so the attention-row methods and LeGrad's read-out are
refused. LRP is refused: the GLU MLP's product ``act(input) * gate`` has no rule here yet (it would silently get a
plain gradient). Gradient x input and integrated gradients are refused: the embeddings are LayerNorm-ed before any
position embedding is added, so the model is invariant to scaling each of them (but for the LayerNorm's epsilon)
and by Euler's theorem every token's map would show that epsilon, not the model.
"""

from __future__ import annotations

from torch import Tensor
from transformers import ModernBertForSequenceClassification

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class ModernBertFamily(TextEncoderFamily):
    """ModernBERT: ``classifier(head(final_norm(h[CLS])))`` with CLS pooling (see the module docstring)."""

    name = "modernbert"
    examples = "ModernBertForSequenceClassification"
    model_classes = (ModernBertForSequenceClassification,)
    unsupported = {
        "lrp_rules": "its GLU MLP (act(input) * gate) has no LRP rule here yet",
        "input_embeddings": "its token embeddings are LayerNorm-ed before anything is added (RoPE adds no "
        "position embedding), so the model is scale-invariant in each input embedding and gradient x input shows "
        "only the LayerNorm's epsilon",
    }

    def missing_capabilities(self) -> dict[str, str]:
        """Mean pooling: no prediction row and no head read-out of a single token."""
        missing = super().missing_capabilities()
        if self.model.config.classifier_pooling != "cls":
            reason = "its head pools the mean of all tokens (classifier_pooling='mean'): no single row predicts"
            missing.update(prediction_row=reason, head_readout=reason)
        return missing

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(head(final_norm(h[CLS])))`` (the head's dropout skipped)."""
        model = self.model
        return model.classifier(model.head(model.model.final_norm(token_at(hidden, rows))))
