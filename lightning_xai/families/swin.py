"""Swin (``SwinForImageClassification``): windowed attention over tokens merged between stages, mean-pooled head.

Its attention maps are ``[windows x heads x w^2 x w^2]`` per layer, over a token grid that patch merging halves at
every stage: they are not one token axis, so the methods built on attention maps (Grad-SAM, raw attention,
rollout, GAE, attention-Shapley, LeGrad) are refused; mapping windows and stages back onto the input patch grid is
not done here yet. The patch embeddings are LayerNorm-ed before anything is added to them, so the model is
invariant to scaling each of them (but for the LayerNorm's epsilon): by Euler's theorem gradient x input and
integrated gradients there would show that epsilon, not the model, and are refused. What runs on the input patch
grid (``patch_size`` patches, no prefix token): CP-LRP and AttnLRP (LayerNorm, linear and patch-merging layers,
GELU; the relative position bias enters the scores as a constant), read at the embeddings' output.
"""

from __future__ import annotations

from torch import Tensor
from transformers import SwinForImageClassification
from transformers.models.swin.modeling_swin import SwinRelativePositionBias

from lightning_xai.capture.base import AttentionRecord
from lightning_xai.errors import LightningXAIError
from lightning_xai.families.base import ENCODER_LRP_RULES
from lightning_xai.families.encoders import VisionEncoderFamily
from lightning_xai.types import ModelInputs

_WINDOWS = "its attention is per window, over tokens merged between stages: no map over one token axis"


class SwinFamily(VisionEncoderFamily):
    """Swin image classifiers (see the module docstring)."""

    name = "swin"
    examples = "SwinForImageClassification"
    model_classes = (SwinForImageClassification,)
    num_prefix_tokens = 0
    unsupported = {
        "input_embeddings": "its patch embeddings are LayerNorm-ed before anything is added, so the model is "
        "scale-invariant in each patch embedding and gradient x input shows only the LayerNorm's epsilon",
        "attentions": _WINDOWS,
        "attention_gradients": _WINDOWS,
        "hidden_states": "its stages' outputs lie on grids of different sizes",
        "prediction_row": "its head average-pools every token of the last stage: no single row predicts",
        "head_readout": "its layers' outputs lie on grids of different sizes, which its head does not read",
    }
    lrp_rules = {**ENCODER_LRP_RULES, SwinRelativePositionBias: "none"}

    def token_count(self, inputs: ModelInputs, record: AttentionRecord) -> int:
        """The input patch grid: ``(height / patch) x (width / patch)``."""
        patch = self.patch_size()
        height, width = inputs["pixel_values"].shape[-2:]
        return (height // patch) * (width // patch)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """Not defined (``head_readout`` is refused at setup)."""
        raise LightningXAIError(self.unsupported["head_readout"])
