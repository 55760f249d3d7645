"""Read a layer's tokens out through the model's OWN classification head (LeGrad's per-layer scores).

Each supported family maps hidden states ``[B, N, D]`` (the output of any transformer layer) to logits ``[B, C]``
exactly as the model maps its last layer's output, with the model's own modules (final norm, pooler, classifier)
and without dropout (the read-out is deterministic whatever the train mode of the model). Applied to the last
layer's output it reproduces the model's logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_xai.errors import LightningXAIError

ReadOut = Callable[[Tensor], Tensor]

SUPPORTED_HEADS = (
    "BertForSequenceClassification, RobertaForSequenceClassification, DistilBertForSequenceClassification, "
    "ViTForImageClassification, DeiTForImageClassification, DeiTForImageClassificationWithTeacher"
)


def _bert(model: nn.Module) -> ReadOut:
    pooler = model.bert.pooler
    if pooler is None:
        raise LightningXAIError(f"{type(model).__name__} has no pooler: cannot read intermediate layers out")
    return lambda hidden: model.classifier(pooler.activation(pooler.dense(hidden[:, 0])))


def _roberta(model: nn.Module) -> ReadOut:
    head = model.classifier
    return lambda hidden: head.out_proj(torch.tanh(head.dense(hidden[:, 0])))


def _distilbert(model: nn.Module) -> ReadOut:
    return lambda hidden: model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))


def _vit(model: nn.Module) -> ReadOut:
    return lambda hidden: model.classifier(model.vit.layernorm(hidden[:, 0]))


def _deit(model: nn.Module) -> ReadOut:
    return lambda hidden: model.classifier(model.deit.layernorm(hidden[:, 0]))


def _deit_with_teacher(model: nn.Module) -> ReadOut:
    def read(hidden: Tensor) -> Tensor:
        normed = model.deit.layernorm(hidden[:, :2])
        return (model.cls_classifier(normed[:, 0]) + model.distillation_classifier(normed[:, 1])) / 2

    return read


_READERS: dict[str, Callable[[nn.Module], ReadOut]] = {
    "BertForSequenceClassification": _bert,
    "RobertaForSequenceClassification": _roberta,
    "DistilBertForSequenceClassification": _distilbert,
    "ViTForImageClassification": _vit,
    "DeiTForImageClassification": _deit,
    "DeiTForImageClassificationWithTeacher": _deit_with_teacher,
}


def head_readout(model: nn.Module) -> ReadOut:
    """The model's own final norm/pooler/head as a function ``hidden [B, N, D] -> logits [B, C]``.

    The family is found from the class hierarchy (subclasses of a supported class are supported).

    Args:
        model: a supported HF classifier.

    Returns:
        A function applying the model's read-out (no dropout) to any layer's hidden states.

    Raises:
        LightningXAIError: the model's head is not one of the supported ones.

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=8, vocab_size=50)).eval()
        >>> out = model(input_ids=torch.tensor([[2, 7, 3]]), output_hidden_states=True)
        >>> torch.allclose(head_readout(model)(out.hidden_states[-1]), out.logits)
        True
    """
    for cls in type(model).__mro__:
        reader = _READERS.get(cls.__name__)
        if reader is not None:
            return reader(model)
    raise LightningXAIError(
        f"Cannot read intermediate layers out through the head of {type(model).__name__}: supported heads are "
        f"{SUPPORTED_HEADS}."
    )
