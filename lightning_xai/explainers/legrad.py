r"""LeGrad: layer-wise gradients of each layer's own read-out (Bousselham et al. 2024, arXiv:2404.03214).

.. math::

    s^l = \mathrm{head}\big(\mathrm{norm}(\mathrm{pool}(z^l))\big)_c, \qquad
    m^l_j = \frac{1}{H\,n} \sum_{h} \sum_{i\ \mathrm{valid}}
            \mathrm{ReLU}\Big(\frac{\partial s^l}{\partial A^{l,h}}\Big)_{ij}, \qquad
    \mathrm{LeGrad}_j = \mathrm{minmax}\Big(\sum_{l \ge l_0} m^l\Big)_j

with :math:`z^l` the output tokens of layer ``l``, read out through the model's OWN final norm, pooler and
classifier (:meth:`lightning_xai.families.ModelFamily.read_out`), :math:`c` the explained class (pre-softmax
logit), :math:`A^{l,h}` the post-softmax attention of layer ``l`` only, ``n`` the number of real tokens. Special and
prefix tokens ([CLS], [SEP], distillation token) and padding are zeroed before the per-sample min-max over the
content tokens, which divides by ``max(max - min, eps)`` (the official code has no epsilon).

Presets. The default (``LeGrad()``) reads each layer out where the model itself reads its prediction (the [CLS]
token, a decoder's last token, a mean-pooled head's mean; for a [CLS]-pooled head only row 0 of the gradient is
non-zero, so the mean over query rows is ``row0 / n``) and aggregates every layer, as the paper text says.
:meth:`LeGrad.official` follows the released OpenCLIP wrapper (``WalBouss/LeGrad``, ``LeWrapper(layer_index=-2)``,
``compute_legrad_clip``): the last two layers only, and each layer read out from the MEAN of all its tokens (class
token included, padding excluded) through the final norm and head. On
:class:`~lightning_xai.families.CLIPZeroShotClassifier` (the official code's setting) that is
``normalize(visual_projection(post_layernorm(mean(z^l))))`` against the prompt's text embedding, the official
algorithm up to two things: our score carries CLIP's ``logit_scale`` (a positive constant, which the min-max
removes) and the map stays on the patch grid, where the official code upsamples it bilinearly to pixels before its
min-max (``tests/explainers/test_legrad.py`` checks equality with a reference written from the official code).
For a head that reads one row, the mean token is given to it in that row; for a head that pools rows itself, every
row holds the mean token (Dinov2's ``[CLS, mean(patches)]`` head then reads ``[mean, mean]``).

Cost: the ``L - l0`` calls ``torch.autograd.grad(s^l, A^l)`` (no ``create_graph``) each traverse only the graph
between ``A^l`` and ``s^l`` (the rest of layer ``l`` and the head; the autograd engine skips nodes that do not
lead to the requested input, which ``tests/explainers/test_legrad.py`` checks), so together they cost about one
full backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers.base import Explainer, ForwardPass

#: Where each layer is read out: the model's own prediction row(s), or the mean of all real tokens (official code).
Pooling = Literal["prediction_row", "mean"]


def legrad(layer_gradients: Sequence[Tensor], valid_mask: Tensor, content_mask: Tensor, eps: float = 1e-12) -> Tensor:
    """LeGrad map from each layer's gradient of its own read-out score w.r.t. its attention.

    Args:
        layer_gradients: per aggregated layer ``[B, H, N, N]``, ``d s^l / d A^l``.
        valid_mask: ``[B, N]`` real tokens (padded query rows are excluded from the row mean).
        content_mask: ``[B, N]`` tokens that get a score (real and not special); the others get 0.
        eps: floor of ``max - min`` in the min-max normalisation.

    Returns:
        ``[B, N]`` float32 in ``[0, 1]`` on content tokens, 0 elsewhere.

    Example:
        >>> import torch
        >>> G = torch.zeros(1, 1, 3, 3)
        >>> G[0, 0, 0] = torch.tensor([5.0, 2.0, -1.0])  # only the [CLS] row carries gradient
        >>> content = torch.tensor([[False, True, True]])
        >>> legrad([G], torch.ones(1, 3, dtype=torch.bool), content).tolist()
        [[0.0, 1.0, 0.0]]
    """
    if len(layer_gradients) == 0:
        raise ValueError("legrad needs the gradient of at least one layer")
    valid = valid_mask.to(layer_gradients[0].device)
    rows = valid.to(torch.float32)
    n = rows.sum(dim=1, keepdim=True).clamp_min(1)
    total = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    for gradient in layer_gradients:
        positive = gradient.float().clamp_min(0).mean(dim=1)  # [B, N, N], mean over heads
        total = total + torch.einsum("bij,bi->bj", positive, rows) / n  # mean over valid query rows
    content = content_mask.to(valid.device)
    lowest = total.masked_fill(~content, float("inf")).amin(dim=1, keepdim=True)
    highest = total.masked_fill(~content, float("-inf")).amax(dim=1, keepdim=True)
    scaled = (total - lowest) / (highest - lowest).clamp_min(eps)
    return torch.where(content, scaled, torch.zeros_like(scaled))


class LeGrad(Explainer):
    """LeGrad (Bousselham et al. 2024) for HF classifiers: every layer read out through the model's own head.

    Args:
        start_layer: first aggregated layer; negative values count from the end (``-2``: the last two layers, the
            official wrapper's default). Default 0: all layers.
        eps: floor of ``max - min`` in the per-sample min-max normalisation.
        pooling: ``"prediction_row"`` (default: where the model reads its prediction) or ``"mean"`` (the mean of
            all real tokens, as the official code); see :meth:`official` and the module docstring.

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> relevance = explain(model, inputs, [LeGrad()], modality=text)["legrad"].relevance
        >>> relevance[0, [0, 3, 4]].tolist(), float(relevance.max())  # special tokens and padding get 0
        ([0.0, 0.0, 0.0], 1.0)
    """

    name: ClassVar[str] = "legrad"
    needs: ClassVar[frozenset[str]] = frozenset({"attentions", "hidden_states", "head_readout"})

    def __init__(self, start_layer: int = 0, eps: float = 1e-12, pooling: Pooling = "prediction_row") -> None:
        if pooling not in ("prediction_row", "mean"):
            raise ValueError(f"LeGrad(pooling=...) must be 'prediction_row' or 'mean', got {pooling!r}")
        self.start_layer = int(start_layer)
        self.eps = float(eps)
        self.pooling: Pooling = pooling

    @classmethod
    def official(cls) -> LeGrad:
        """The released OpenCLIP wrapper's settings: the last two layers, each read out from the mean of its tokens.

        Example:
            >>> LeGrad.official()
            LeGrad(start_layer=-2, eps=1e-12, pooling='mean')
        """
        return cls(start_layer=-2, pooling="mean")

    def explain(self, forward: ForwardPass) -> Tensor:
        """LeGrad map of the pass: one ``autograd.grad`` per aggregated layer, each on a disjoint graph tail."""
        if forward.family is None:
            raise LightningXAIError("LeGrad needs the model family (ForwardPass.family) to read layers out")
        hidden_states = forward.hidden_states
        num_layers = len(forward.attentions)
        if hidden_states is None or len(hidden_states) != num_layers:
            found = 0 if hidden_states is None else len(hidden_states)
            raise LightningXAIError(
                f"LeGrad needs every layer's output: got {found} hidden states for {num_layers} attention layers"
            )
        start = self.start_layer + num_layers if self.start_layer < 0 else self.start_layer
        if not 0 <= start < num_layers:
            raise LightningXAIError(f"LeGrad(start_layer={self.start_layer}) is out of range for {num_layers} layers")
        rows, target = forward.prediction_rows, forward.target[:, None]
        weights = forward.valid_mask.to(hidden_states[0].dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)  # mean over the real tokens
        gradients = []
        for layer in range(start, num_layers):
            hidden = hidden_states[layer]
            if self.pooling == "mean":  # every row holds the mean token, whichever row(s) the head reads
                hidden = torch.einsum("bnd,bn->bd", hidden, weights.to(hidden.device))[:, None].expand_as(hidden)
            score = forward.family.layer_logits(hidden, rows, forward.inputs).gather(1, target).sum()
            attention = forward.attentions[layer]
            (gradient,) = torch.autograd.grad(score, attention, retain_graph=True, allow_unused=True)
            gradients.append(torch.zeros_like(attention) if gradient is None else gradient)
        content = forward.valid_mask & ~forward.special_mask
        with torch.no_grad():
            return legrad(gradients, forward.valid_mask, content, self.eps)
