"""ALBERT (``AlbertForSequenceClassification``): one layer shared by every depth, read out through its pooler."""

from __future__ import annotations

from torch import Tensor
from transformers import AlbertForSequenceClassification

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class AlbertFamily(TextEncoderFamily):
    """ALBERT: ``classifier(tanh(pooler(h[CLS])))``; each call of the shared layer is recorded as its own layer."""

    name = "albert"
    examples = "AlbertForSequenceClassification"
    model_classes = (AlbertForSequenceClassification,)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(pooler_activation(pooler(h[CLS])))``."""
        base = self.model.albert
        return self.model.classifier(base.pooler_activation(base.pooler(token_at(hidden, rows))))
