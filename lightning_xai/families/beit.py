"""BEiT (``BeitForImageClassification``): class token + patches, relative position bias, mean-pooled head.

With ``use_mean_pooling`` (the default) the head reads the LayerNorm of the mean of the patch tokens, not the class
token: the attention-row methods (raw attention, rollout, GAE, the cls Shapley game) have no row to read and are
refused. The relative position bias enters the attention scores as a constant (it takes no relevance in LRP).
"""

from __future__ import annotations

from torch import Tensor
from transformers import BeitForImageClassification

from lightning_xai.families.encoders import VisionEncoderFamily


class BeitFamily(VisionEncoderFamily):
    """BEiT: ``classifier(pooler(layernorm(h)))``, the pooler's mean over patches or the class token."""

    name = "beit"
    examples = "BeitForImageClassification"
    model_classes = (BeitForImageClassification,)
    num_prefix_tokens = 1

    def missing_capabilities(self) -> dict[str, str]:
        """Mean pooling: no prediction row."""
        missing = super().missing_capabilities()
        if self.model.beit.pooler.layernorm is not None:
            missing["prediction_row"] = "its head reads the mean of the patch tokens (use_mean_pooling), no row"
        return missing

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """The model's own pooling: ``classifier(pooler(layernorm(h)))`` (images have no padding)."""
        base = self.model.beit
        return self.model.classifier(base.pooler(base.layernorm(hidden)))
