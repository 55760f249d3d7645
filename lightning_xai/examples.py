"""Tiny random models and inputs for the documentation's examples and quick experiments.

Built from configs in milliseconds, no download, the same every time (each model is drawn from its own seeded
stream; the global RNG is left as it was).

Example:
    >>> from lightning_xai import explain
    >>> from lightning_xai.explainers import GradSAM
    >>> maps = explain(tiny_bert(), tiny_text_batch(), [GradSAM()], modality=tiny_text_modality())
    >>> maps["grad_sam"].relevance.shape
    torch.Size([1, 5])
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

from lightning_xai.modalities import TextModality
from lightning_xai.types import ModelInputs

#: The token ids of :func:`tiny_text_batch` and :func:`tiny_text_modality`: ``[PAD]=0``, ``[CLS]=2``, ``[SEP]=3``,
#: ``[MASK]=4``; words are 5..49.
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def tiny_bert(layers: int = 2, num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    """A random 2-head BERT classifier of hidden size 16 over a 50-token vocabulary, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = BertConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=8,
                            vocab_size=50, num_labels=num_labels)
        return BertForSequenceClassification(config).eval()


def tiny_text_batch() -> ModelInputs:
    """One row ``[CLS] w w [SEP] [PAD]``: four real tokens, two of them content, and one padding position."""
    return {"input_ids": torch.tensor([[CLS, 7, 9, SEP, PAD]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}


def tiny_text_modality() -> TextModality:
    """Token bookkeeping of :func:`tiny_text_batch`: special ids [PAD], [CLS], [SEP]; removal by [MASK]."""
    return TextModality(special_ids=[PAD, CLS, SEP], pad_id=PAD, replacement_id=MASK)
