r"""Attention baselines: raw last-layer attention and attention rollout (Abnar & Zuidema, ACL 2020).

Raw attention: :math:`s_j = \frac{1}{H}\sum_h A^{L,h}_{q j}` (the prediction row ``q`` of the last layer, head mean;
Chefer et al.'s ``generate_attn_last_layer`` without zeroing the [CLS] entry).

Rollout: :math:`\hat A^l = \mathrm{rownorm}\big(\tfrac{1}{H}\sum_h A^{l,h} + I\big)`,
:math:`R = \hat A^L \hat A^{L-1} \cdots \hat A^1`, :math:`s_j = R_{q j}`.

Both are restricted to real tokens: padded rows and columns are removed before the head mean and the row
re-normalisation, so a padded sample scores exactly as the same sample alone. The row ``q`` of each sample is the
one its model family says carries the prediction (:meth:`~lightning_xai.families.ModelFamily.prediction_rows`: the
[CLS] / ``<s>`` / class token of the encoders, row 0). Special tokens keep their score and are marked in
``Explanation.special_mask``. Rollout only needs that row, so it is computed as a row vector times the layers from
the last to the first: ``O(L N^2)`` instead of ``O(L N^3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from lightning_xai.explainers.base import Explainer, ForwardPass, query_weights, read_rows


def _pair_mask(valid_mask: Tensor, like: Tensor) -> Tensor:
    valid = valid_mask.to(like.device)
    return (valid[:, :, None] & valid[:, None, :]).to(like.dtype)


def raw_attention(attentions: Sequence[Tensor], valid_mask: Tensor, query: int | Tensor = 0) -> Tensor:
    """Head-mean attention of the last layer's ``query`` row over real keys.

    Args:
        attentions: per layer ``[B, H, N, N]`` post-softmax attention (only the last is used).
        valid_mask: ``[B, N]`` real tokens; padding gets 0.
        query: the row read: one index for every sample, ``[B]`` indices (0: [CLS]), or ``[B, N]`` row weights
            (the weighted mean of those rows is read).

    Returns:
        ``[B, N]`` float32.

    Example:
        >>> import torch
        >>> A = torch.tensor([[[[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]])
        >>> raw_attention([A], torch.tensor([[True, True, False]])).tolist()
        [[0.5, 0.25, 0.0]]
    """
    last = read_rows(attentions[-1].detach().float().mean(dim=1), query)
    return last * valid_mask.to(last.device)


def rollout(attentions: Sequence[Tensor], valid_mask: Tensor, query: int | Tensor = 0) -> Tensor:
    """Attention rollout row ``query`` (Abnar & Zuidema 2020), restricted to real tokens.

    Args:
        attentions: per layer ``[B, H, N, N]`` post-softmax attention, first layer first.
        valid_mask: ``[B, N]`` real tokens; padded rows/columns are dropped before re-normalising.
        query: the row read: one index for every sample, ``[B]`` indices (0: [CLS]), or ``[B, N]`` row weights
            (the weighted mean of those rows is read).

    Returns:
        ``[B, N]`` float32, sums to 1 over the real tokens of each row.

    Example:
        >>> import torch
        >>> A = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
        >>> rollout([A, A], torch.tensor([[True, True]])).tolist()  # ((A + I) / 2)^2 row 0
        [[0.625, 0.375]]
    """
    if len(attentions) == 0:
        raise ValueError("rollout needs at least one attention map")
    first = attentions[0]
    batch, num_tokens = first.shape[0], first.shape[-1]
    pair = _pair_mask(valid_mask, first.float())
    eye = torch.eye(num_tokens, device=first.device, dtype=torch.float32)
    row = query_weights(query, batch, num_tokens, first.device)[:, None, :]
    for attention in reversed(attentions):
        mixed = attention.detach().float().mean(dim=1) * pair + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        row = row @ mixed
    return row[:, 0] * valid_mask.to(row.device)


class RawAttention(Explainer):
    """Raw attention of the last layer: the prediction row ([CLS] for encoders), averaged over heads.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> relevance = explain(model, inputs, [RawAttention()], modality=text)["raw_attention"].relevance
        >>> round(float(relevance.sum()), 5), float(relevance[0, 4])
        (1.0, 0.0)
    """

    name: ClassVar[str] = "raw_attention"
    needs: ClassVar[frozenset[str]] = frozenset({"attentions", "prediction_row"})

    def explain(self, forward: ForwardPass) -> Tensor:
        """Last-layer attention of the pass's prediction rows."""
        with torch.no_grad():
            return raw_attention(forward.attentions, forward.valid_mask, forward.prediction_rows)


class Rollout(Explainer):
    """Attention rollout (Abnar & Zuidema, ACL 2020): head mean + identity, row-normalised, multiplied over layers.

    Example (a ViT: the class token's row over [CLS] + 4 patches; every row of a rollout sums to 1):
        >>> import torch
        >>> from transformers import ViTConfig, ViTForImageClassification
        >>> from lightning_xai import explain
        >>> from lightning_xai.modalities import VisionModality
        >>> model = ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...     intermediate_size=8, image_size=8, patch_size=4))
        >>> maps = explain(model, {"pixel_values": torch.randn(2, 3, 8, 8)}, [Rollout()], modality=VisionModality(4))
        >>> maps["rollout"].relevance.shape, [round(float(row.sum()), 5) for row in maps["rollout"].relevance]
        (torch.Size([2, 5]), [1.0, 1.0])
    """

    name: ClassVar[str] = "rollout"
    needs: ClassVar[frozenset[str]] = frozenset({"attentions", "prediction_row"})

    def explain(self, forward: ForwardPass) -> Tensor:
        """Rollout of the pass's prediction rows."""
        with torch.no_grad():
            return rollout(forward.attentions, forward.valid_mask, forward.prediction_rows)
