"""GPT-2 (``GPT2ForSequenceClassification``): a decoder pooled at the last real token, with learned positions.

As the generic decoders (:mod:`lightning_xai.families.decoder`): the prediction row is the rightmost non-padding
token, the read-out ``score(ln_f(h[last]))``, removal through the attention mask. GPT-2 differs in its LayerNorms
(LN rule), its ``Conv1D`` projections (the linear rule with a transposed weight) and its absolute position table:
LRP's ``embeddings_output`` is the input of the first block, ``wte + wpe`` (the output of ``transformer.drop``), as
lxt reads it. Absolute positions also mean that left padding moves every token's position: left- and
right-padded batches give the model different inputs (pass ``position_ids`` to align them).
"""

from __future__ import annotations

from torch import nn
from transformers import GPT2ForSequenceClassification

from lightning_xai.families.decoder import DecoderFamily


class GPT2Family(DecoderFamily):
    """GPT-2 sequence classifiers (see the module docstring)."""

    name = "gpt2"
    examples = "GPT2ForSequenceClassification"
    model_classes = (GPT2ForSequenceClassification,)

    def embeddings_output(self) -> nn.Module:
        """``transformer.drop``, whose output is the token plus position embeddings entering the first block."""
        return self.model.transformer.drop
