"""Swin (``SwinForImageClassification``): windowed attention over tokens merged between stages, mean-pooled head.

Its attention maps are ``[windows x heads x w^2 x w^2]`` per layer, over a token grid that patch merging halves at
every stage: not one token axis. Grad-SAM is defined on them: each layer's per-token scores are computed inside
the windows (padding excluded) and mapped back onto the input patch grid (:class:`WindowLayout`: the cyclic shift
undone, each merged token's score on the 2^s x 2^s input patches it covers). The methods that read the prediction
row (raw attention, rollout, GAE, attention-Shapley: a mean-pooled head has none) or multiply maps across layers
(rollout, GAE: patch merging mixes tokens between them) and LeGrad (layer outputs on grids of different sizes) are
refused. The patch embeddings are LayerNorm-ed before anything is added to them, so the model is
invariant to scaling each of them (but for the LayerNorm's epsilon): by Euler's theorem gradient x input and
integrated gradients there would show that epsilon, not the model, and are refused. What runs on the input patch
grid (``patch_size`` patches, no prefix token): CP-LRP and AttnLRP (LayerNorm, linear and patch-merging layers,
GELU; the relative position bias enters the scores as a constant), read at the embeddings' output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from transformers import SwinForImageClassification
from transformers.models.swin.modeling_swin import SwinLayer, SwinRelativePositionBias, window_partition

from lightning_xai.capture.base import AttentionRecord, WindowLayout
from lightning_xai.capture.hf import HFAttentionCapture
from lightning_xai.errors import LightningXAIError
from lightning_xai.families.base import ENCODER_LRP_RULES
from lightning_xai.families.encoders import VisionEncoderFamily
from lightning_xai.types import ModelInputs

_WINDOWS = (
    "its attention is per window, over tokens merged between stages: no map over one token axis (Grad-SAM maps "
    "the windows back onto the patch grid; the other attention methods need one axis)"
)


def window_layout(layer: SwinLayer, height: int, width: int, input_shape: tuple[int, int]) -> WindowLayout:
    """Where ``layer``'s windows lie, from its own padding, cyclic shift and window partition of a grid of indices.

    Call it after the layer's forward (which may shrink its window to the grid).

    Example:
        >>> from transformers import SwinConfig, SwinModel
        >>> model = SwinModel(SwinConfig(image_size=16, patch_size=4, embed_dim=8, depths=[2], num_heads=[2],
        ...                              window_size=2))
        >>> shifted = model.encoder.layers[0].blocks[1]  # the second block shifts its windows by 1
        >>> window_layout(shifted, 4, 4, (4, 4)).token_of[0].tolist()  # the first window after the shift
        [5, 6, 9, 10]
    """
    window = int(layer.window_size)
    positions = torch.arange(1, height * width + 1, dtype=torch.float64).view(1, height, width, 1)
    padded, _ = layer.maybe_pad(positions, height, width)
    windows = window_partition(layer.cyclic_shift(padded), window)
    token_of = windows.reshape(-1, window * window).round().long() - 1  # padding (0) -> -1
    level = 0
    while -(-input_shape[0] // 2**level) != height or -(-input_shape[1] // 2**level) != width:
        level += 1
        if 2**level > max(input_shape):
            raise LightningXAIError(f"a {height}x{width} stage grid is not a halving of the {input_shape} input grid")
    return WindowLayout(token_of, (height, width), input_shape, level)


class SwinWindowCapture(HFAttentionCapture):
    """Swin's windowed attention through the AttentionInterface, plus each call's :class:`WindowLayout`."""

    family = "swin"
    examples = "SwinForImageClassification"

    @contextmanager
    def record(self) -> Iterator[AttentionRecord]:
        """Record the windows' attention and where each window lies; hooks removed on exit."""
        with super().record() as record:

            def keep_layout(layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _output: Any) -> None:
                height, width = args[1] if len(args) > 1 else kwargs["input_dimensions"]
                first = record.window_layouts[0].input_shape if record.window_layouts else (int(height), int(width))
                record.window_layouts.append(window_layout(layer, int(height), int(width), first))  # type: ignore[arg-type]

            handles = [m.register_forward_hook(keep_layout, with_kwargs=True) for m in self.model.modules()
                       if isinstance(m, SwinLayer)]
            try:
                yield record
            finally:
                for handle in handles:
                    handle.remove()


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
        "attention_outputs": _WINDOWS,
        "hidden_states": "its stages' outputs lie on grids of different sizes",
        "prediction_row": "its head average-pools every token of the last stage: no single row predicts",
        "head_readout": "its layers' outputs lie on grids of different sizes, which its head does not read",
    }
    lrp_rules = {**ENCODER_LRP_RULES, SwinRelativePositionBias: "none"}
    capture_class = SwinWindowCapture

    def token_count(self, inputs: ModelInputs, record: AttentionRecord) -> int:
        """The input patch grid: ``(height / patch) x (width / patch)``."""
        patch = self.patch_size()
        height, width = inputs["pixel_values"].shape[-2:]
        return (height // patch) * (width // patch)

    def read_out(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """Not defined (``head_readout`` is refused at setup)."""
        raise LightningXAIError(self.unsupported["head_readout"])
