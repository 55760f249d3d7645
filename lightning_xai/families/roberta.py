"""RoBERTa and XLM-RoBERTa / CamemBERT (the same architecture): ``<s>`` at row 0, read out through the head."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import (
    CamembertForSequenceClassification,
    RobertaForSequenceClassification,
    XLMRobertaForSequenceClassification,
)
from transformers.models.camembert.modeling_camembert import CamembertClassificationHead
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaClassificationHead

from lightning_xai.families._readout import token_at
from lightning_xai.families.base import ENCODER_LRP_RULES
from lightning_xai.families.encoders import TextEncoderFamily


class RobertaFamily(TextEncoderFamily):
    """RoBERTa: ``out_proj(tanh(dense(h[<s>])))`` (the head's dropouts skipped); the encoder LRP rules.

    The head's ``tanh`` is a function call, not a module: the rule table marks the head
    ``"functional_activation"``, so LRP's identity rule reaches that call while the head runs.
    """

    name = "roberta"
    examples = "Roberta/XLMRoberta/CamembertForSequenceClassification"
    model_classes = (
        RobertaForSequenceClassification,
        XLMRobertaForSequenceClassification,
        CamembertForSequenceClassification,
    )
    lrp_rules = {
        **ENCODER_LRP_RULES,
        **dict.fromkeys(
            (RobertaClassificationHead, XLMRobertaClassificationHead, CamembertClassificationHead),
            "functional_activation",
        ),
    }

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``out_proj(tanh(dense(h[<s>])))``."""
        head = self.model.classifier
        return head.out_proj(torch.tanh(head.dense(token_at(hidden, rows))))
