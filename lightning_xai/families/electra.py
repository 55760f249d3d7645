"""ELECTRA (``ElectraForSequenceClassification``): ``[CLS]`` at row 0; a GELU classification head, no pooler."""

from __future__ import annotations

from torch import Tensor
from transformers import ElectraForSequenceClassification

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class ElectraFamily(TextEncoderFamily):
    """ELECTRA discriminators: ``out_proj(gelu(dense(h[CLS])))`` (the head's dropouts skipped); encoder LRP rules."""

    name = "electra"
    examples = "ElectraForSequenceClassification"
    model_classes = (ElectraForSequenceClassification,)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``out_proj(activation(dense(h[CLS])))``."""
        head = self.model.classifier
        return head.out_proj(head.activation(head.dense(token_at(hidden, rows))))
