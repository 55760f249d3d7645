"""DistilBERT (``DistilBertForSequenceClassification``): ``[CLS]`` at row 0, no pooler, ReLU pre-classifier."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DistilBertForSequenceClassification

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class DistilBertFamily(TextEncoderFamily):
    """DistilBERT: ``classifier(relu(pre_classifier(h[CLS])))``; the encoder LRP rules."""

    name = "distilbert"
    examples = "DistilBertForSequenceClassification"
    model_classes = (DistilBertForSequenceClassification,)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(relu(pre_classifier(h[CLS])))``."""
        return self.model.classifier(torch.relu(self.model.pre_classifier(token_at(hidden, rows))))
