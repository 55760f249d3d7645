r"""Grad-SAM: gradient self-attention maps (Barkan et al., CIKM 2021, arXiv:2204.11073).

.. math::

    s_i = \frac{1}{L H n} \sum_{l=1}^{L} \sum_{h=1}^{H} \sum_{j} \Big(A^{l,h} \odot
          \mathrm{ReLU}\big(\tfrac{\partial y_c}{\partial A^{l,h}}\big)\Big)_{ij}

with :math:`A^{l,h}` the post-softmax attention of layer ``l``, head ``h``, :math:`y_c` the pre-softmax logit of the
explained class and ``n`` the number of real (non-padding) tokens. ReLU is applied to the gradient only, then the
Hadamard product with the attention, then the mean over heads and layers (summing over one axis of the ``n x n``
map). All layers come from ONE backward pass.

No official code was published; the summing axis is ambiguous between the two public re-implementations
(see ``docs/methods/grad_sam.md``): ``axis="query"`` (default, Eggen et al. 2025's ``grad_sam_org.py``: token ``i``
scores the positive gradient carried by its own attention row) or ``axis="key"`` (token ``j`` scores the positively
weighted attention it receives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from lightning_xai.capture.base import WindowLayout
from lightning_xai.explainers.base import Explainer, ForwardPass

Axis = Literal["query", "key"]


def grad_sam(
    attentions: Sequence[Tensor], gradients: Sequence[Tensor], valid_mask: Tensor, axis: Axis = "query"
) -> Tensor:
    """Grad-SAM relevance per token from attention maps and their gradients.

    Args:
        attentions: per layer ``[B, H, N, N]`` post-softmax attention.
        gradients: per layer ``[B, H, N, N]`` gradient of the explained logit w.r.t. that attention.
        valid_mask: ``[B, N]`` bool, real tokens; padded rows and columns are excluded and padding gets 0.
        axis: ``"query"`` sums each row over keys (score of the attending token); ``"key"`` sums each column
            over queries (score of the attended token).

    Returns:
        ``[B, N]`` float32 relevance, non-negative, zero on padding.

    Example:
        >>> import torch
        >>> A = torch.full((1, 1, 2, 2), 0.5)
        >>> G = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
        >>> grad_sam([A], [G], torch.tensor([[True, True]])).tolist()  # (0.5 + 0) / 2, (1 + 0) / 2
        [[0.25, 0.5]]
        >>> grad_sam([A], [G], torch.tensor([[True, True]]), axis="key").tolist()  # (0.5 + 1) / 2, 0 / 2
        [[0.75, 0.0]]
    """
    if axis not in ("query", "key"):
        raise ValueError(f"axis must be 'query' or 'key', got {axis!r}")
    if len(attentions) == 0 or len(attentions) != len(gradients):
        raise ValueError(f"Need one gradient per attention map, got {len(attentions)} maps, {len(gradients)} gradients")
    total: Tensor | None = None
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (attention.detach().float() * gradient.float().clamp_min(0)).sum(dim=1)  # sum over heads
        total = weighted if total is None else total + weighted
    assert total is not None
    valid = valid_mask.to(total.device)
    pair = (valid[:, :, None] & valid[:, None, :]).to(total.dtype)
    total = total * pair
    scores = total.sum(dim=-1) if axis == "query" else total.sum(dim=-2)
    num_heads = attentions[0].shape[1]
    n = valid.sum(dim=1).clamp_min(1).to(total.dtype)
    return scores / (len(attentions) * num_heads * n[:, None])


def windowed_grad_sam(
    attentions: Sequence[Tensor], gradients: Sequence[Tensor], layouts: Sequence[WindowLayout], axis: Axis = "query"
) -> Tensor:
    """Grad-SAM of a model that attends within windows (Swin), on the input token grid.

    Per layer, :func:`grad_sam`'s quantity inside each window: ``sum_h A * ReLU(dy/dA)`` summed over the window's
    keys (``axis="query"``) or queries (``"key"``), window padding excluded, divided by the layer's heads and the
    window's tokens (the ``1 / (H n)`` of one axis); then mapped onto the input grid (each merged token's score on
    every input token it covers, :meth:`WindowLayout.to_input_grid`) and averaged over layers.

    Args:
        attentions: per layer ``[B x windows, H, w^2, w^2]``.
        gradients: their gradients, same shapes.
        layouts: where each layer's window positions lie on the input grid.
        axis: as :func:`grad_sam`.

    Returns:
        ``[B, input tokens]`` float32.
    """
    if len(attentions) == 0 or not len(attentions) == len(gradients) == len(layouts):
        raise ValueError(f"Need one gradient and one layout per attention map, got {len(attentions)} maps, "
                         f"{len(gradients)} gradients, {len(layouts)} layouts")
    total: Tensor | None = None
    for attention, gradient, layout in zip(attentions, gradients, layouts, strict=True):
        num_windows = layout.token_of.shape[0]
        valid = layout.valid(attention.shape[0] // num_windows).to(attention.device)  # [B x windows, w^2]
        weighted = (attention.detach().float() * gradient.float().clamp_min(0)).sum(dim=1)
        weighted = weighted * (valid[:, :, None] & valid[:, None, :]).float()
        scores = weighted.sum(dim=-1) if axis == "query" else weighted.sum(dim=-2)
        tokens = valid.sum(dim=1, keepdim=True).clamp_min(1).float()
        per_token = layout.to_input_grid(scores / (attention.shape[1] * tokens))
        total = per_token if total is None else total + per_token
    assert total is not None
    return total / len(attentions)


class GradSAM(Explainer):
    """Grad-SAM (Barkan et al., CIKM 2021): ReLU-gated attention gradients times attention, over all layers.

    Args:
        axis: ``"query"`` (default; as Eggen et al.'s re-implementation) or ``"key"``; see the module docstring.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> maps = explain(model, inputs, [GradSAM()], modality=text)
        >>> maps["grad_sam"].relevance.shape, float(maps["grad_sam"].relevance[0, 4])
        (torch.Size([1, 5]), 0.0)
    """

    name: ClassVar[str] = "grad_sam"
    # the attention gradients come with their maps; one token axis is not needed (Swin's windows are mapped back)
    needs: ClassVar[frozenset[str]] = frozenset({"attention_gradients"})

    def __init__(self, axis: Axis = "query") -> None:
        if axis not in ("query", "key"):
            raise ValueError(f"GradSAM(axis=...) must be 'query' or 'key', got {axis!r}")
        self.axis: Axis = axis

    def explain(self, forward: ForwardPass) -> Tensor:
        """Grad-SAM map of the pass (shares the cached attention gradients)."""
        gradients = forward.attention_gradients()
        with torch.no_grad():
            if forward.window_layouts is not None:
                return windowed_grad_sam(forward.attentions, gradients, forward.window_layouts, self.axis)
            return grad_sam(forward.attentions, gradients, forward.valid_mask, self.axis)
