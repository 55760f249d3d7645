"""ViT (``ViTForImageClassification``): the class token, then the patch grid; read out through the final norm."""

from __future__ import annotations

from transformers import ViTForImageClassification

from lightning_xai.families.encoders import VisionEncoderFamily


class ViTFamily(VisionEncoderFamily):
    """ViT: one prefix token (``[CLS]``); ``classifier(layernorm(h[CLS]))``; the encoder LRP rules."""

    name = "vit"
    examples = "ViTForImageClassification"
    model_classes = (ViTForImageClassification,)
    num_prefix_tokens = 1
