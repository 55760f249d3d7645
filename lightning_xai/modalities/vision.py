"""Vision transformers: prefix tokens (``[CLS]``, distillation) followed by a row-major patch grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from lightning_xai.errors import LightningXAIError
from lightning_xai.modalities.base import Modality
from lightning_xai.types import ModelInputs

if TYPE_CHECKING:
    from lightning_xai.types import Explanation

#: Weights of the 8 neighbours in ROAD's noisy linear imputation (Rong et al., ICML 2022): 1/6 direct, 1/12 diagonal.
_ROAD_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
VISION_BASELINES = ("zero", "mean", "blur", "road")


def gaussian_blur(pixels: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Per-channel Gaussian blur with reflect padding (RISE's insertion canvas: ``klen=11, ksig=5``)."""
    half = kernel_size // 2
    x = torch.arange(kernel_size, dtype=pixels.dtype, device=pixels.device) - half
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = pixels.shape[1]
    out = torch.nn.functional.pad(pixels, (half, half, half, half), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def noisy_linear_impute(
    pixels: Tensor, removed: Tensor, noise_std: float = 0.01, seed: int = 0, tol: float = 1e-6, max_iter: int = 2000
) -> Tensor:
    """ROAD's noisy linear imputation: each removed pixel is the weighted mean of its in-image 8 neighbours.

    The linear system (one per image, shared by the channels) is solved jointly by conjugate gradients; Gaussian
    noise of std ``noise_std`` is then added to the imputed pixels. The noise of a row is drawn from a generator
    seeded with ``seed`` and the sum of its removed pixels' indices (+1), so it never depends on chunking or batch
    composition (two masks with the same index sum share a noise field; each is still independent across pixels).
    An image with every pixel removed is filled with zeros (+ noise).

    Args:
        pixels: ``[B, C, H, W]``.
        removed: ``[B, H, W]`` bool.
        noise_std: std of the added noise (ROAD's default 0.01).
        seed: base seed of the noise.
        tol: relative residual at which CG stops.
        max_iter: CG iteration cap.
    """
    b, c, h, w = pixels.shape
    weights = _ROAD_WEIGHTS.to(pixels).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    unknown = removed[:, None].expand(b, c, h, w).to(pixels.dtype)
    known = 1 - unknown

    def conv(x: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), weights, groups=c)

    degree = conv(torch.ones_like(pixels))  # sum of in-image neighbour weights

    def matvec(x: Tensor) -> Tensor:
        return unknown * (degree * x - conv(x * unknown))

    rhs = unknown * conv(pixels * known)
    x = torch.zeros_like(pixels)
    r = rhs - matvec(x)
    p = r.clone()
    rs = (r * r).sum(dim=(1, 2, 3), keepdim=True)
    stop = (tol**2) * (rhs * rhs).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = matvec(p)
        alpha = rs / (p * ap).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(dim=(1, 2, 3), keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    out = pixels * known + x * unknown
    if noise_std > 0:
        flat = removed.reshape(b, -1)
        codes = (flat.long() * torch.arange(1, flat.shape[1] + 1, device=flat.device)).sum(dim=1)
        noise = torch.stack(
            [
                torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(code)))
                for code in codes.tolist()
            ]
        ).to(pixels)
        out = out + noise_std * noise * unknown
    return out


class VisionModality(Modality):
    """Images cut into square patches; removing a patch sets its pixels to a baseline.

    Args:
        patch_size: side of a patch in pixels (``config.patch_size``).
        baseline: value of removed pixels in the model's input space: ``"zero"`` (0 after normalisation, i.e. the
            normalisation mean colour), ``"mean"`` (each image's own per-channel mean), ``"blur"`` (the image
            blurred with a Gaussian, ``klen=11, sigma=5`` as RISE), ``"road"`` (ROAD's noisy linear imputation,
            :func:`noisy_linear_impute`) or a number.
        road_noise: noise std of the ROAD imputation.
        num_prefix_tokens: tokens before the patch grid (ViT 1, DeiT 2), as the model family knows them; None:
            found as the tokens the grid leaves over.

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

    def __init__(
        self, patch_size: int, baseline: Literal["zero", "mean", "blur", "road"] | float = "zero",
        road_noise: float = 0.01, num_prefix_tokens: int | None = None,
    ) -> None:
        if isinstance(baseline, str) and baseline not in VISION_BASELINES:
            raise ValueError(f"baseline must be one of {VISION_BASELINES} or a number, got {baseline!r}")
        self.patch_size = int(patch_size)
        self.baseline = baseline
        self.road_noise = road_noise
        self.prefix_tokens = num_prefix_tokens

    def variant(self, removal: str | float) -> VisionModality:  # type: ignore[override]
        """A copy with another baseline (``"zero"``, ``"mean"``, ``"blur"``, ``"road"`` or a number)."""
        return VisionModality(self.patch_size, removal, self.road_noise, self.prefix_tokens)  # type: ignore[arg-type]

    def grid(self, inputs: ModelInputs) -> tuple[int, int]:
        """Patch grid ``(rows, columns)`` of the images in ``inputs``."""
        height, width = inputs["pixel_values"].shape[-2:]
        return height // self.patch_size, width // self.patch_size

    def num_prefix_tokens(self, inputs: ModelInputs, num_tokens: int) -> int:
        """Tokens before the patch grid (1 for ViT's [CLS], 2 for DeiT's [CLS] + distillation)."""
        rows, cols = self.grid(inputs)
        prefix = num_tokens - rows * cols
        if prefix < 0 or (self.prefix_tokens is not None and prefix != self.prefix_tokens):
            expected = "" if self.prefix_tokens is None else f" after {self.prefix_tokens} prefix tokens"
            raise LightningXAIError(
                f"{num_tokens} tokens do not hold a {rows}x{cols} patch grid{expected}: is "
                f"patch_size={self.patch_size} right?"
            )
        return prefix

    def num_tokens(self, inputs: ModelInputs) -> int:
        """Tokens per row of the model's attention: prefix tokens (at most two when unknown) + the patch grid."""
        rows, cols = self.grid(inputs)
        return rows * cols + (2 if self.prefix_tokens is None else self.prefix_tokens)

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
        if self.baseline == "road":
            perturbed = dict(inputs)
            perturbed["pixel_values"] = noisy_linear_impute(pixels, full, self.road_noise)
            return perturbed
        if self.baseline == "zero":
            fill: Tensor | float = 0.0
        elif self.baseline == "mean":
            fill = pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels)
        elif self.baseline == "blur":
            fill = gaussian_blur(pixels)
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

    def sample_view(self, inputs: ModelInputs, row: int, maps: Mapping[str, Explanation]) -> dict[str, Any]:
        """The image ``[C, H, W]`` of row ``row`` and each method's relevance on the patch grid ``[rows, cols]``."""
        single = {key: value[row : row + 1] for key, value in inputs.items()}
        return {
            "image": single["pixel_values"][0].detach().float().cpu().numpy(),
            "maps": {n: self.patch_map(e.relevance[row : row + 1], single)[0].cpu().numpy() for n, e in maps.items()},
        }
