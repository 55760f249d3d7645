"""DeiT: a class token and a distillation token, then the patch grid; with or without the distillation head."""

from __future__ import annotations

from torch import Tensor
from transformers import DeiTForImageClassification, DeiTForImageClassificationWithTeacher

from lightning_xai.families._readout import token_at
from lightning_xai.families.encoders import VisionEncoderFamily


class DeiTFamily(VisionEncoderFamily):
    """DeiT (``DeiTForImageClassification``): class and distillation tokens; ``classifier(layernorm(h[CLS]))``."""

    name = "deit"
    examples = "DeiTForImageClassification"
    model_classes = (DeiTForImageClassification,)
    num_prefix_tokens = 2


class DeiTWithTeacherFamily(DeiTFamily):
    """DeiT with the distillation head: the mean of the class-token and distillation-token classifiers.

    The prediction row is the class token; the distillation token (row 1) is read out beside it, as the model does.
    """

    name = "deit_with_teacher"
    examples = "DeiTForImageClassificationWithTeacher"
    model_classes = (DeiTForImageClassificationWithTeacher,)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``(cls_classifier(ln(h[CLS])) + distillation_classifier(ln(h[CLS + 1]))) / 2``."""
        model = self.model
        cls_token = model.deit.layernorm(token_at(hidden, rows))
        distillation = model.deit.layernorm(token_at(hidden, rows + 1))
        return (model.cls_classifier(cls_token) + model.distillation_classifier(distillation)) / 2
