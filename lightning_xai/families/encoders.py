"""Shared shapes of encoder families: text classifiers (tokenizer) and vision classifiers (patch grid)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_xai.errors import LightningXAIError
from lightning_xai.families._readout import token_at
from lightning_xai.families.base import ModelFamily
from lightning_xai.modalities.text import TextModality
from lightning_xai.modalities.vision import VisionModality

#: What to do when a text model comes without its tokenizer.
TOKENIZER_HINT = (
    "Pass ExplanationMonitor(tokenizer=...), or set a `tokenizer` attribute on your LightningModule or "
    "DataModule (offline: build TextModality.from_tokenizer(tokenizer))."
)


class TextEncoderFamily(ModelFamily):
    """A text encoder read from its first token (``[CLS]`` / ``<s>``); tokens come from its tokenizer."""

    modality: ClassVar[str] = "text"
    #: How the perturbation metrics remove tokens by default: replaced by the tokenizer's mask token.
    default_removal: ClassVar[str] = "replace"

    def build_modality(self, tokenizer: Any | None = None, removal: str | float | None = None) -> TextModality:
        """Special tokens, named tokens and the default removal, from the tokenizer."""
        if tokenizer is None:
            raise LightningXAIError(
                f"Explaining a {type(self.model).__name__} needs its tokenizer (to know the special tokens and the "
                f"token that replaces removed ones). {TOKENIZER_HINT}"
            )
        return TextModality.from_tokenizer(tokenizer, removal=removal or self.default_removal)  # type: ignore[arg-type]


class VisionEncoderFamily(ModelFamily):
    """A vision transformer: ``num_prefix_tokens`` tokens, then the row-major patch grid of ``config.patch_size``.

    The default read-out is the HF image classifiers' ``classifier(base_model.layernorm(h[CLS]))``.
    """

    modality: ClassVar[str] = "vision"
    #: Tokens before the patch grid (the class token; DeiT adds a distillation token).
    num_prefix_tokens: ClassVar[int] = 1

    def patch_size(self) -> int:
        """Side of a square patch in pixels, from the model's config."""
        patch = getattr(getattr(self.model, "config", None), "patch_size", None)
        if patch is None:
            raise LightningXAIError(
                f"{type(self.model).__name__} has no config.patch_size: cannot map its tokens to image patches"
            )
        return int(patch[0] if isinstance(patch, (tuple, list)) else patch)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(layernorm(h[CLS]))`` with the backbone's final LayerNorm."""
        return self.model.classifier(self.model.base_model.layernorm(token_at(hidden, rows)))

    def build_modality(self, tokenizer: Any | None = None, removal: str | float | None = None) -> VisionModality:
        """Patch grid and prefix tokens of this model (the tokenizer is not used); ``removal`` is the baseline."""
        return VisionModality(patch_size=self.patch_size(), baseline=removal if removal is not None else "zero",
                              num_prefix_tokens=self.num_prefix_tokens)
