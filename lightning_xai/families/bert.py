"""BERT (``BertForSequenceClassification``): ``[CLS]`` at row 0, read out through the pooler and the classifier."""

from __future__ import annotations

from torch import Tensor
from transformers import BertForSequenceClassification

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class BertFamily(TextEncoderFamily):
    """BERT and its subclasses (MiniLM, ...): ``classifier(pooler(h[CLS]))``; the encoder LRP rules.

    Example:
        >>> import torch
        >>> from transformers import BertConfig
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=8, vocab_size=50)).eval()
        >>> out = model(input_ids=torch.tensor([[2, 7, 3]]), output_hidden_states=True)
        >>> torch.allclose(BertFamily(model).read_out(out.hidden_states[-1], torch.tensor([0])), out.logits)
        True
    """

    name = "bert"
    examples = "BertForSequenceClassification (BERT, MiniLM)"
    model_classes = (BertForSequenceClassification,)

    def missing_capabilities(self) -> dict[str, str]:
        """A BERT built without its pooler (``add_pooling_layer=False``) has no head to read layers out through."""
        missing = super().missing_capabilities()
        if self.model.bert.pooler is None:
            missing["head_readout"] = "this BERT has no pooler (it was built with add_pooling_layer=False)"
        return missing

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(tanh(pooler.dense(h[CLS])))``."""
        pooler = self.model.bert.pooler
        return self.model.classifier(pooler.activation(pooler.dense(token_at(hidden, rows))))
