"""RoBERTa and XLM-RoBERTa / CamemBERT (the same architecture): ``<s>`` at row 0, read out through the head."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import (
    CamembertForSequenceClassification,
    RobertaForSequenceClassification,
    XLMRobertaForSequenceClassification,
)

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class RobertaFamily(TextEncoderFamily):
    """RoBERTa: ``out_proj(tanh(dense(h[<s>])))`` (the head's dropouts skipped); the encoder LRP rules.

    The head's ``tanh`` is a function call, not a module: LRP's identity rule reaches it through the functional
    activations of :mod:`lightning_xai.explainers.lrp`.
    """

    name = "roberta"
    examples = "Roberta/XLMRoberta/CamembertForSequenceClassification"
    model_classes = (
        RobertaForSequenceClassification,
        XLMRobertaForSequenceClassification,
        CamembertForSequenceClassification,
    )

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``out_proj(tanh(dense(h[<s>])))``."""
        head = self.model.classifier
        return head.out_proj(torch.tanh(head.dense(token_at(hidden, rows))))
