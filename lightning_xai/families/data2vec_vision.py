"""Data2Vec-vision (``Data2VecVisionForImageClassification``): BEiT's architecture, attention in its own modules.

Capture: scoped module hooks on every ``Data2VecVisionSelfAttention`` (an SDPA variant runs the eager ``forward``
for the pass, bound on the instance and removed after). As BEiT: the head reads the mean of the patch
tokens by default (the attention-row methods are refused then), read-out ``classifier(pooler(layernorm(h)))``.
LRP is refused: the scores (with the relative position bias) are computed inside the attention module.
"""

from __future__ import annotations

from torch import Tensor
from transformers import Data2VecVisionForImageClassification
from transformers.models.data2vec.modeling_data2vec_vision import (
    Data2VecVisionLayer,
    Data2VecVisionSelfAttention,
)

from lightning_xai.capture.hooks import ModuleHookCapture
from lightning_xai.families.encoders import VisionEncoderFamily


class Data2VecVisionFamily(VisionEncoderFamily):
    """Data2Vec-vision image classifiers (see the module docstring)."""

    name = "data2vec_vision"
    examples = "Data2VecVisionForImageClassification"
    model_classes = (Data2VecVisionForImageClassification,)
    num_prefix_tokens = 1
    capture_class = ModuleHookCapture
    unsupported = {
        "lrp_rules": "its attention scores (with the relative position bias) are computed inside "
        "Data2VecVisionSelfAttention, where the attention rules cannot be applied"
    }

    def capture(self) -> ModuleHookCapture:
        """Hooks on every self-attention (probabilities) and every layer (outputs)."""
        modules = list(self.model.modules())
        return ModuleHookCapture(
            self.model,
            [m for m in modules if isinstance(m, Data2VecVisionSelfAttention)],
            [m for m in modules if isinstance(m, Data2VecVisionLayer)],
            eager_class=Data2VecVisionSelfAttention,  # the SDPA variant returns no probabilities
        )

    def missing_capabilities(self) -> dict[str, str]:
        """Mean pooling: no prediction row."""
        missing = super().missing_capabilities()
        if self.model.data2vec_vision.pooler.layernorm is not None:
            missing["prediction_row"] = "its head reads the mean of the patch tokens (use_mean_pooling), no row"
        return missing

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """The model's own pooling: ``classifier(pooler(layernorm(h)))``."""
        base = self.model.data2vec_vision
        return self.model.classifier(base.pooler(base.layernorm(hidden)))
