"""CLIP's vision tower as an image classifier (``CLIPForImageClassification``).

The head reads the mean of the patch tokens of the last layer (``classifier(mean(h[1:]))``, no final norm), so no
single row carries the prediction: the attention-row methods are refused. The patch embedding is a convolution
flattened inside ``CLIPVisionEmbeddings`` (no module outputs the patch tokens alone), so gradient x input and
integrated gradients at the patch embeddings are refused; LRP reads relevance at the embeddings' output (class
token, patches and positions, before ``pre_layrnorm``). The patch size is ``config.vision_config.patch_size``.
The zero-shot ``CLIPModel`` (an image-text similarity target) is not covered.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers import CLIPForImageClassification

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
