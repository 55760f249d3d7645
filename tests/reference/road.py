"""ROAD (Rong et al., ICML 2022), one image and one fraction at a time (slow and obvious).

The imputation is written from the paper's description (and the original ``NoisyLinearImputer``): every removed
pixel equals the weighted mean of its in-image 8 neighbours (1/6 direct, 1/12 diagonal; weights renormalised by the
neighbours that exist), all removed pixels solved jointly. Here the system is assembled entry by entry and solved
densely in float64 with ``numpy.linalg.solve`` (the library uses matrix-free conjugate gradients in the input dtype).
"""

import math

import numpy as np
import torch

NEIGHBOURS = [(-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12)]


def linear_impute_reference(image, removed):
    """``image [C, H, W]`` (any array), ``removed [H, W]`` bool -> imputed float64 numpy image (no noise).

    Row ``i`` of the system (one per removed pixel): ``(Σ_j w_ij) x_i − Σ_{j removed} w_ij x_j =
    Σ_{j kept} w_ij image_j`` over the in-image neighbours ``j``. With no kept pixel at all the library documents a
    zero fill.
    """
    img = np.asarray(image, dtype=np.float64)
    rem = np.asarray(removed, dtype=bool)
    channels, height, width = img.shape
    unknown = [(r, c) for r in range(height) for c in range(width) if rem[r, c]]
    out = img.copy()
    if not unknown:
        return out
    if len(unknown) == height * width:
        return np.zeros_like(img)
    index = {pixel: i for i, pixel in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), channels))
    for i, (r, c) in enumerate(unknown):
        for dr, dc, w in NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if not (0 <= rr < height and 0 <= cc < width):
                continue
            a[i, i] += w
            if rem[rr, cc]:
                a[i, index[(rr, cc)]] -= w
            else:
                b[i] += w * img[:, rr, cc]
    x = np.linalg.solve(a, b)
    for i, (r, c) in enumerate(unknown):
        out[:, r, c] = x[i]
    return out


def road_noise_reference(removed, channels, noise_std, seed=0):
    """The library's documented noise: a ``torch.Generator`` seeded with ``seed * 1_000_003 + code`` where ``code``
    is the sum of ``flat_index + 1`` over removed pixels (row-major), one ``randn(C, H, W)`` draw, scaled by
    ``noise_std`` and kept on removed pixels only."""
    rem = np.asarray(removed, dtype=bool)
    height, width = rem.shape
    code = 0
    for r in range(height):
        for c in range(width):
            if rem[r, c]:
                code += r * width + c + 1
    noise = torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed * 1_000_003 + code))
    noise = noise.double().numpy() * noise_std
    for r in range(height):
        for c in range(width):
            if not rem[r, c]:
                noise[:, r, c] = 0.0
    return noise


def patch_pixels(patches, rows, cols, patch, height, width):
    """Set of patch indices (row-major over the grid) -> ``[H, W]`` bool pixel mask."""
    mask = np.zeros((height, width), dtype=bool)
    for p in patches:
        r, c = divmod(p, cols)
        for y in range(r * patch, (r + 1) * patch):
            for x in range(c * patch, (c + 1) * patch):
                mask[y, x] = True
    return mask


def road_images_reference(image, relevance, patch, prefix, fractions, order="morf", noise_std=0.01):
    """The perturbed images of one image, one per fraction: ``[(removed patch indices, imputed float64 image)]``.

    The top (MoRF) / bottom (LeRF) ``ceil(f * n)`` patches by relevance (ties: earlier patch first) are imputed.
    ``relevance``: per model token (``prefix`` tokens first, then the patch grid row-major)."""
    channels, height, width = image.shape
    rows, cols = height // patch, width // patch
    patch_relevance = list(relevance[prefix:])
    n = len(patch_relevance)
    assert n == rows * cols
    sign = -1 if order == "morf" else 1
    ranked = sorted(range(n), key=lambda p: (sign * patch_relevance[p], p))
    out = []
    for f in fractions:
        k = math.ceil(f * n - 1e-9)
        removed = patch_pixels(ranked[:k], rows, cols, patch, height, width)
        imputed = linear_impute_reference(image, removed)
        if noise_std > 0:
            imputed = imputed + road_noise_reference(removed, channels, noise_std)
        out.append((sorted(ranked[:k]), imputed))
    return out


def road_value_reference(model, perturbed, target, score="prob"):
    """ROAD value of one image from its :func:`road_images_reference` list: the mean over the fractions of the
    explained class's softmax probability (or logit); ``model`` (a HF image classifier) sees one image at a time."""
    ys = []
    for _, imputed in perturbed:
        with torch.no_grad():
            logits = model(pixel_values=torch.tensor(imputed, dtype=torch.float32)[None]).logits[0].float()
        ys.append((logits.softmax(-1) if score == "prob" else logits)[target].item())
    return sum(ys) / len(ys)
