"""The fallback for any other HF model on the AttentionInterface: what can be defined without knowing its head.

Capture works as for the known families (the recording attention function), and so do the methods that need only
the attention maps and their gradients over all rows (Grad-SAM, attention-Shapley's mutual games) and the input
gradients (gradient x input, integrated gradients). Refused, each with its reason: the attention-row methods (raw
attention, rollout, GAE, the cls Shapley game), because which row carries the prediction depends on the head
(``[CLS]``, the last token of a decoder, a mean; reading row 0 of a causal model gives one-hot maps); LeGrad,
which needs the head's read-out; LRP, which needs a rule for every module. Describe the model in a family file to
get them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedModel

from lightning_xai.capture.hf import HFAttentionCapture
from lightning_xai.errors import LightningXAIError
from lightning_xai.families.base import ModelFamily
from lightning_xai.families.encoders import TOKENIZER_HINT
from lightning_xai.modalities.base import Modality
from lightning_xai.modalities.text import TextModality
from lightning_xai.modalities.vision import VisionModality

_WHY = "lightning_xai has no family for this model, so it does not know {what}"


class GenericFamily(ModelFamily):
    """Any other ``PreTrainedModel`` whose attention goes through the AttentionInterface (see the module docstring)."""

    name = "generic"
    examples = "any other transformers>=5 classifier on the AttentionInterface (attention-gradient methods only)"
    model_classes = (PreTrainedModel,)
    unsupported = {
        "prediction_row": _WHY.format(what="which token row its head reads"),
        "head_readout": _WHY.format(what="how its head reads a layer out"),
        "lrp_rules": _WHY.format(what="the LRP rules of its modules and attention"),
    }

    @property
    def modality(self) -> str:  # type: ignore[override]
        """``"vision"`` for pixel inputs, else ``"text"``."""
        return "vision" if getattr(self.model, "main_input_name", "input_ids") == "pixel_values" else "text"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """A HF model whose attention implementation can be switched at run time."""
        return isinstance(model, PreTrainedModel) and HFAttentionCapture.supports(model)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """Unknown head: refused at setup (``head_readout``)."""
        raise LightningXAIError(self.unsupported["head_readout"])

    def build_modality(self, tokenizer: Any | None = None, removal: str | float | None = None) -> Modality:
        """Text from the tokenizer (mask-token replacement when it has one, else the attention mask), or a grid."""
        if self.modality == "vision":
            config = self.model.config
            patch = getattr(config, "patch_size", None) or getattr(getattr(config, "vision_config", None),
                                                                   "patch_size", None)
            if patch is None:
                raise LightningXAIError(f"{type(self.model).__name__} has no patch_size in its config")
            size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
            return VisionModality(size, baseline=removal if removal is not None else "zero")
        if tokenizer is None:
            raise LightningXAIError(f"Explaining a {type(self.model).__name__} needs its tokenizer. {TOKENIZER_HINT}")
        default = "replace" if getattr(tokenizer, "mask_token_id", None) is not None else "attention"
        return TextModality.from_tokenizer(tokenizer, removal=removal or default)  # type: ignore[arg-type]
