r"""Generic attention explainability, GAE (Chefer, Gur & Wolf, ICCV 2021, arXiv:2103.15679).

.. math::

    R^0 = I, \qquad \bar A^l = \mathbb{E}_h\big[(\nabla A^{l,h} \odot A^{l,h})^+\big], \qquad
    R^l = R^{l-1} + \bar A^l R^{l-1}, \qquad s_j = R^L_{0 j}

with :math:`\nabla A^{l,h} = \partial y_c / \partial A^{l,h}` the gradient of the explained class's pre-softmax
logit (ReLU AFTER the product, then the head mean), the self-attention rule of the paper (encoder-only models have
no bi-modal or co-attention terms), read at the prediction row ``q`` of each sample (``R^L_{q j}``; the [CLS] /
class token of the encoders, from the model family). Padded rows and columns are removed;
special tokens keep their score (the official code keeps ``R[0, 0]`` too and slices it off for images). The
gradients are :meth:`ForwardPass.attention_gradients`: ONE backward shared with Grad-SAM and attention-Shapley.
Only that row is needed, so it is computed as ``r <- r + r Ā^l`` from the last layer to the first
(``R^L = (I + Ā^L) ... (I + Ā^1)``), ``O(L N^2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from lightning_xai.explainers.base import Explainer, ForwardPass, query_weights


def gae(
    attentions: Sequence[Tensor], gradients: Sequence[Tensor], valid_mask: Tensor, query: int | Tensor = 0
) -> Tensor:
    """GAE relevance of every token for the ``query`` row (Chefer et al. 2021, self-attention rule).

    Args:
        attentions: per layer ``[B, H, N, N]`` post-softmax attention, first layer first.
        gradients: per layer ``[B, H, N, N]`` gradient of the explained logit w.r.t. that attention.
        valid_mask: ``[B, N]`` real tokens; padding rows/columns are dropped and get 0.
        query: the row read: one index for every sample, ``[B]`` indices (0: [CLS]), or ``[B, N]`` row weights
            (the weighted mean of those rows is read).

    Returns:
        ``[B, N]`` float32, ``>= 0`` with ``1`` added on ``query`` itself (the identity).

    Example:
        >>> import torch
        >>> A = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
        >>> G = torch.tensor([[[[2.0, -2.0], [1.0, 1.0]]]])
        >>> gae([A], [G], torch.tensor([[True, True]])).tolist()  # e0 + e0 (G * A)^+
        [[2.0, 0.0]]
    """
    if len(attentions) == 0 or len(attentions) != len(gradients):
        raise ValueError(f"Need one gradient per attention map, got {len(attentions)} maps, {len(gradients)} gradients")
    first = attentions[0]
    batch, num_tokens = first.shape[0], first.shape[-1]
    valid = valid_mask.to(first.device)
    pair = (valid[:, :, None] & valid[:, None, :]).float()
    row = query_weights(query, batch, num_tokens, first.device)[:, None, :]
    for attention, gradient in zip(reversed(attentions), reversed(gradients), strict=True):
        weighted = (gradient.float() * attention.detach().float()).clamp_min(0).mean(dim=1) * pair
        row = row + row @ weighted
    return row[:, 0] * valid.float()


class GAE(Explainer):
    """Chefer et al.'s generic attention explainability (ICCV 2021): gradient-weighted attention, rolled out.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> relevance = explain(model, inputs, [GAE()], modality=text)["gae"].relevance
        >>> bool(relevance[0, 0] >= 1), float(relevance[0, 4])
        (True, 0.0)
    """

    name: ClassVar[str] = "gae"
    needs: ClassVar[frozenset[str]] = frozenset({"attentions", "attention_gradients", "prediction_row"})

    def explain(self, forward: ForwardPass) -> Tensor:
        """GAE map of the pass (shares the cached attention gradients)."""
        gradients = forward.attention_gradients()
        with torch.no_grad():
            return gae(forward.attentions, gradients, forward.valid_mask, forward.prediction_rows)
