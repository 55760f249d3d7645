"""CLIP's vision tower: as an image classifier (``CLIPForImageClassification``) and zero-shot (``CLIPModel``).

The head reads the mean of the patch tokens of the last layer (``classifier(mean(h[1:]))``, no final norm), so no
single row carries the prediction: the attention-row methods are refused. The patch embedding is a convolution
flattened inside ``CLIPVisionEmbeddings`` (no module outputs the patch tokens alone), so gradient x input and
integrated gradients at the patch embeddings are refused; LRP reads relevance at the embeddings' output (class
token, patches and positions, before ``pre_layrnorm``). The patch size is ``config.vision_config.patch_size``.

Zero-shot (the setting of the official LeGrad code): :class:`CLIPZeroShotClassifier` wraps a ``CLIPModel`` and a
set of text prompts into an image classifier whose logit ``c`` is CLIP's image-text similarity with prompt ``c``
(``logit_scale.exp() * cos(image_embedding, text_embedding_c)``, equal to ``CLIPModel(...).logits_per_image``).
Its image embedding is read at the class token (``visual_projection(post_layernorm(h[CLS]))``), so every method
runs, the attention-row methods included. The prompts' embeddings are constants of the explanation (the text tower
is not explained); they are recomputed whenever the text tower's weights change in place (fine-tuning).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPForImageClassification, CLIPModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.clip.modeling_clip import CLIPPreTrainedModel

from lightning_xai.capture.base import eval_mode
from lightning_xai.families._readout import token_at
from lightning_xai.families.base import ENCODER_LRP_RULES
from lightning_xai.families.encoders import VisionEncoderFamily


class ClipVisionFamily(VisionEncoderFamily):
    """``CLIPForImageClassification`` (see the module docstring)."""

    name = "clip_vision"
    examples = "CLIPForImageClassification"
    model_classes = (CLIPForImageClassification,)
    num_prefix_tokens = 1
    unsupported = {
        "prediction_row": "its head reads the mean of the patch tokens: no single row predicts",
        "input_embeddings": "its patch embedding is a convolution flattened inside CLIPVisionEmbeddings: no module "
        "outputs the patch tokens alone",
    }

    def patch_size(self) -> int:
        """``config.vision_config.patch_size``."""
        return int(self.model.config.vision_config.patch_size)

    def embeddings_output(self) -> nn.Module:
        """The vision tower's embeddings (class token, patches, positions)."""
        return self.model.vision_model.embeddings

    def word_embeddings(self) -> nn.Module:
        """The same module: CLIP has no module whose output is the patch tokens alone."""
        return self.embeddings_output()

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``classifier(mean(h[patches]))``."""
        return self.model.classifier(hidden[:, 1:].mean(dim=1))


class L2Normalize(nn.Module):
    """``x / ||x||_2`` over the last dimension: CLIP's embedding normalisation as a module.

    A module so that LRP can give it its rule: the output is the input times ``1 / ||x||``, whose relevance passes
    with the factor held constant (the identity rule of normalisations, as for RMSNorm). Gradient x input through
    the plain function would be zero: ``x / ||x||`` is homogeneous of degree 0.

    Example:
        >>> L2Normalize()(torch.tensor([[3.0, 4.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x / ||x||`` along the last dimension."""
        return x / x.norm(p=2, dim=-1, keepdim=True)


class CLIPZeroShotClassifier(CLIPPreTrainedModel):
    """A ``CLIPModel`` and text prompts as an image classifier: logit ``c`` = CLIP's similarity with prompt ``c``.

    The vision tower, the visual projection and the logit scale are the CLIP model's own (shared, not copied:
    fine-tuning the CLIP model is seen by the classifier); the text tower is kept outside this module's tree, so
    hooks, attention backends and LRP rules touch the vision side only. The prompts' embeddings are computed
    without gradient, in eval mode, and again whenever a text-side parameter changed in place.

    Args:
        model: the CLIP model.
        prompts: the tokenized prompts (``input_ids`` and ``attention_mask``, ``[C, L]``), one per class.
        labels: optional class names (``config.id2label``).

    Example:
        >>> from transformers import CLIPConfig
        >>> clip = CLIPModel(CLIPConfig(
        ...     vision_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
        ...                        image_size=16, patch_size=4),
        ...     text_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
        ...                      vocab_size=50, bos_token_id=2, eos_token_id=3, pad_token_id=0))).eval()
        >>> prompts = {"input_ids": torch.tensor([[2, 7, 3], [2, 9, 3]]), "attention_mask": torch.ones(2, 3).long()}
        >>> classifier = CLIPZeroShotClassifier(clip, prompts, labels=["cat", "dog"]).eval()
        >>> pixels = torch.randn(1, 3, 16, 16)
        >>> torch.allclose(classifier(pixel_values=pixels).logits,
        ...                clip(pixel_values=pixels, **prompts).logits_per_image, atol=1e-5)
        True
    """

    def __init__(
        self, model: CLIPModel, prompts: Mapping[str, Tensor], labels: list[str] | None = None
    ) -> None:
        if not isinstance(model, CLIPModel):
            raise TypeError(f"CLIPZeroShotClassifier wraps a transformers CLIPModel; got {type(model).__name__}")
        if "input_ids" not in prompts or prompts["input_ids"].dim() != 2:
            raise ValueError("prompts must hold the tokenized prompts' input_ids [C, L] (and their attention_mask)")
        config = copy.copy(model.config)  # own num_labels; the vision sub-config stays shared with the modules
        # the text tower is not part of this module: its attention backend must not follow this one's switches
        config.text_config = copy.deepcopy(model.config.text_config)
        num_classes = int(prompts["input_ids"].shape[0])
        if labels is not None and len(labels) != num_classes:
            raise ValueError(f"{len(labels)} labels for {num_classes} prompts: give one label per prompt")
        config.id2label = {i: labels[i] if labels else f"prompt_{i}" for i in range(num_classes)}
        config.label2id = {label: i for i, label in config.id2label.items()}
        super().__init__(config)
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.normalize = L2Normalize()
        object.__setattr__(self, "_clip", model)  # outside the module tree (see the class docstring)
        self._prompts = {key: value.detach().clone() for key, value in prompts.items() if key != "pixel_values"}
        self._cached: tuple[tuple[Any, ...], Tensor] | None = None

    def _text_side(self) -> list[nn.Parameter]:
        return [*self._clip.text_model.parameters(), *self._clip.text_projection.parameters()]

    def text_embeddings(self) -> Tensor:
        """``[C, D]`` L2-normalised prompt embeddings (cached; recomputed when the text tower's weights change)."""
        parameters = self._text_side()
        device = parameters[0].device
        key = (device, parameters[0].dtype, *(p._version for p in parameters), *(id(p) for p in parameters))
        if self._cached is None or self._cached[0] != key:
            with torch.no_grad(), eval_mode(self._clip.text_model), eval_mode(self._clip.text_projection):
                prompts = {name: value.to(device) for name, value in self._prompts.items()}
                text = self._clip.get_text_features(**prompts).pooler_output
            self._cached = (key, text / text.norm(p=2, dim=-1, keepdim=True))
        return self._cached[1]

    def logits_from_pooled(self, pooled: Tensor) -> Tensor:
        """``logit_scale.exp() * normalize(visual_projection(pooled)) @ text_embeddings().T``."""
        image = self.normalize(self.visual_projection(pooled))
        text = self.text_embeddings().to(image.dtype)
        return self._clip.logit_scale.detach().exp().to(image.dtype) * image @ text.T

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False) -> ImageClassifierOutput:
        """Logits ``[B, C]``: the similarity of each image with each prompt (``CLIPModel.logits_per_image``).

        Only the images are inputs (a batch's captions are not forwarded: the prompts are the classes).
        """
        vision = self.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        pooled = vision.pooler_output
        return ImageClassifierOutput(logits=self.logits_from_pooled(pooled))


class ClipZeroShotFamily(ClipVisionFamily):
    """:class:`CLIPZeroShotClassifier`: CLIP's image-text similarity with given prompts (see the module docstring)."""

    name = "clip_zero_shot"
    examples = "CLIPZeroShotClassifier (a CLIPModel + text prompts)"
    model_classes = (CLIPZeroShotClassifier,)
    unsupported = {
        "input_embeddings": ClipVisionFamily.unsupported["input_embeddings"],
    }
    lrp_rules = MappingProxyType({**ENCODER_LRP_RULES, L2Normalize: "norm_identity"})

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """``logit_scale.exp() * cos(visual_projection(post_layernorm(h[CLS])), prompts)``."""
        vision = self.model.vision_model
        return self.model.logits_from_pooled(vision.post_layernorm(token_at(hidden, rows)))
