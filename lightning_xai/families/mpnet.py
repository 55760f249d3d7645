"""MPNet (``MPNetForSequenceClassification``): relative position bias, attention outside the AttentionInterface.

Capture: scoped module hooks on every ``MPNetSelfAttention``; prediction row ``<s>`` (row 0); read-out
``out_proj(tanh(dense(h[<s>])))``. LRP is refused: the scores (with the relative position bias) are computed
inside the module, where the attention rules cannot be applied.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import MPNetForSequenceClassification
from transformers.models.mpnet.modeling_mpnet import MPNetLayer, MPNetSelfAttention

from lightning_xai.capture.hooks import ModuleHookCapture
from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import TextEncoderFamily


class MPNetFamily(TextEncoderFamily):
    """MPNet sequence classifiers (see the module docstring)."""

    name = "mpnet"
    examples = "MPNetForSequenceClassification"
    model_classes = (MPNetForSequenceClassification,)
    capture_class = ModuleHookCapture
    unsupported = {
        "lrp_rules": "its attention scores (with the relative position bias) are computed inside MPNetSelfAttention, "
        "where the AH and uniform attention rules cannot be applied"
    }

    def capture(self) -> ModuleHookCapture:
        """Hooks on every self-attention (probabilities) and every layer (outputs)."""
        modules = list(self.model.modules())
        return ModuleHookCapture(
            self.model,
            [m for m in modules if isinstance(m, MPNetSelfAttention)],
            [m for m in modules if isinstance(m, MPNetLayer)],
        )

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``out_proj(tanh(dense(h[<s>])))`` (the head's dropouts skipped)."""
        head = self.model.classifier
        return head.out_proj(torch.tanh(head.dense(token_at(hidden, rows))))
