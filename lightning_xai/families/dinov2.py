"""DINOv2 (``Dinov2ForImageClassification``): the head reads the class token AND the mean of the patch tokens.

No single row carries the prediction, so the attention-row methods are refused. Layer scale (``Dinov2LayerScale``,
an element-wise product with a learned vector) is linear: the plain gradient is its LRP-0 rule. The SwiGLU MLP
variant (``use_swiglu_ffn``) has no rule here yet: LRP is refused for it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import Dinov2ForImageClassification
from transformers.models.dinov2.modeling_dinov2 import Dinov2LayerScale

from lightning_xai.families.base import ENCODER_LRP_RULES
from lightning_xai.families.encoders import VisionEncoderFamily


class Dinov2Family(VisionEncoderFamily):
    """DINOv2: ``classifier(cat(ln(h)[CLS], mean(ln(h)[patches])))``."""

    name = "dinov2"
    examples = "Dinov2ForImageClassification"
    model_classes = (Dinov2ForImageClassification,)
    num_prefix_tokens = 1
    unsupported = {"prediction_row": "its head reads the class token and the mean of the patch tokens: no one row"}
    lrp_rules = {**ENCODER_LRP_RULES, Dinov2LayerScale: "none"}

    def missing_capabilities(self) -> dict[str, str]:
        """The SwiGLU MLP variant: no LRP rule."""
        missing = super().missing_capabilities()
        if getattr(self.model.config, "use_swiglu_ffn", False):
            missing["lrp_rules"] = "its SwiGLU MLP has no LRP rule here yet"
        return missing

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(cat(layernorm(h)[CLS], layernorm(h)[patches].mean()))``."""
        normed = self.model.dinov2.layernorm(hidden)
        return self.model.classifier(torch.cat([normed[:, 0], normed[:, 1:].mean(dim=1)], dim=1))
