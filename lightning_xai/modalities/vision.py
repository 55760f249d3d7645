"""Vision transformers: prefix tokens (``[CLS]``, distillation) followed by a row-major patch grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.errors import LightningXAIError
from lightning_xai.modalities.base import Modality
from lightning_xai.types import ModelInputs


class VisionModality(Modality):
    """Images cut into square patches; removing a patch sets its pixels to a baseline.

    Args:
        patch_size: side of a patch in pixels (``config.patch_size``).
        baseline: value of removed pixels in the model's input space: ``"zero"`` (0 after normalisation, i.e. the
            normalisation mean colour), ``"mean"`` (each image's own per-channel mean) or a number.

    Example:
        >>> import torch
        >>> vision = VisionModality(patch_size=2)
        >>> inputs = {"pixel_values": torch.ones(1, 3, 4, 4)}
        >>> valid, special = vision.token_masks(inputs, 5)  # 1 prefix token + 2x2 patches
        >>> special.int().tolist()
        [[1, 0, 0, 0, 0]]
        >>> out = vision.remove(inputs, torch.tensor([[False, True, False, False, False]]))
        >>> out["pixel_values"][0, 0].tolist()
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    name = "vision"

    def __init__(self, patch_size: int, baseline: Literal["zero", "mean"] | float = "zero") -> None:
        self.patch_size = int(patch_size)
        self.baseline = baseline

    def grid(self, inputs: ModelInputs) -> tuple[int, int]:
        """Patch grid ``(rows, columns)`` of the images in ``inputs``."""
        height, width = inputs["pixel_values"].shape[-2:]
        return height // self.patch_size, width // self.patch_size

    def num_prefix_tokens(self, inputs: ModelInputs, num_tokens: int) -> int:
        """Tokens before the patch grid (1 for ViT's [CLS], 2 for DeiT's [CLS] + distillation)."""
        rows, cols = self.grid(inputs)
        prefix = num_tokens - rows * cols
        if prefix < 0:
            raise LightningXAIError(
                f"{num_tokens} tokens cannot hold a {rows}x{cols} patch grid: is patch_size={self.patch_size} right?"
            )
        return prefix

    def token_masks(self, inputs: ModelInputs, num_tokens: int) -> tuple[Tensor, Tensor]:
        """All tokens are valid; the prefix tokens are special."""
        pixels = inputs["pixel_values"]
        valid = torch.ones(pixels.shape[0], num_tokens, dtype=torch.bool, device=pixels.device)
        special = torch.zeros_like(valid)
        special[:, : self.num_prefix_tokens(inputs, num_tokens)] = True
        return valid, special

    def patch_map(self, values: Tensor, inputs: ModelInputs) -> Tensor:
        """``[B, N]`` token values -> ``[B, rows, cols]`` patch grid (prefix tokens dropped)."""
        rows, cols = self.grid(inputs)
        prefix = self.num_prefix_tokens(inputs, values.shape[1])
        return values[:, prefix:].reshape(values.shape[0], rows, cols)

    def remove(self, inputs: ModelInputs, removed: Tensor) -> ModelInputs:
        """Set the pixels of removed patches to the baseline."""
        pixels = inputs["pixel_values"]
        patches = self.patch_map(removed, inputs)
        pixel_mask = patches.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2)
        full = torch.zeros(pixels.shape[0], *pixels.shape[-2:], dtype=torch.bool, device=pixels.device)
        full[:, : pixel_mask.shape[1], : pixel_mask.shape[2]] = pixel_mask
        if self.baseline == "zero":
            fill: Tensor | float = 0.0
        elif self.baseline == "mean":
            fill = pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels)
        else:
            fill = float(self.baseline)
        perturbed = dict(inputs)
        perturbed["pixel_values"] = torch.where(full[:, None], fill, pixels) if isinstance(fill, Tensor) else (
            pixels.masked_fill(full[:, None], fill)
        )
        return perturbed

    def collate(self, parts: Sequence[ModelInputs]) -> ModelInputs:
        """Concatenate image batches (all images of one model share a size)."""
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
