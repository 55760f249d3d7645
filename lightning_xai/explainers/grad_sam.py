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

Long inputs (``GradSAM(attention="sdpa")``, :func:`streamed_grad_sam`): the pass runs on the model's sdpa attention
and keeps each layer's ``q, k, v`` and attention output ``O = A V``. Since ``A`` is used only in that product,
``dy/dA = (dy/dO) V^T``; one backward gives ``dy/dO`` (the size of ``O``), and each layer's ``A`` and ``dy/dA`` are
rebuilt in blocks of query rows and reduced to per-token scores at once. No ``T x T`` map of a whole layer exists at
any time: memory grows with ``T`` (the work, as for every attention row, with ``T^2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from lightning_xai.capture.base import AttentionCall, WindowLayout
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers.base import Explainer, ForwardPass

Axis = Literal["query", "key"]
#: ``"eager"``: the recorded maps and their gradients; ``"sdpa"``: a pass on sdpa, maps rebuilt in blocks of rows.
AttentionBackend = Literal["eager", "sdpa"]
#: Default block of :func:`streamed_grad_sam`: query rows such that one ``[B, H, rows, T]`` float32 block holds
#: at most this many elements (2 MiB; two such blocks are alive at once), at least one row.
CHUNK_ELEMENTS = 2**19


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


def _output_tolerance(dtype: torch.dtype) -> float:
    """Largest ``|A V - O| / max |V|`` accepted between the rebuilt maps and sdpa's output (float rounding only)."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 5e-2


def _layer_scores(
    call: AttentionCall, output_gradient: Tensor, valid: Tensor, axis: Axis, chunk_size: int | None
) -> Tensor:
    """``[B, T]``: one layer's ``sum_h (A * ReLU(dy/dA))`` summed over keys (``"query"``) or queries (``"key"``).

    ``A`` and ``dy/dA = dy/dO V^T`` are rebuilt in blocks of query rows, masked to real rows and columns.
    """
    query, key, value = call.query.detach(), call.key.detach(), call.value.detach()
    batch, heads, rows, _ = query.shape
    kv_heads, columns = key.shape[1], key.shape[2]
    if heads % kv_heads or value.shape[1] != kv_heads or valid.shape[1] != columns:
        raise LightningXAIError(
            f"An attention call with {heads} query heads, {kv_heads} key heads, {value.shape[1]} value heads over "
            f"{columns} keys does not fit the pass's {valid.shape[1]} tokens: its maps cannot be rebuilt."
        )
    groups = heads // kv_heads  # query head h reads key/value head h // groups (HF's repeat_kv)
    keys = key.float()[:, :, None]  # [B, H_kv, 1, S, d]
    values = value.float()[:, :, None]
    gradient = output_gradient.detach().float().transpose(1, 2)  # [B, H, T, d_v]
    output = call.output.detach().float().transpose(1, 2)
    scale = values.abs().amax().clamp_min(torch.finfo(torch.float32).tiny)
    tolerance = _output_tolerance(call.output.dtype)
    step = chunk_size or max(1, CHUNK_ELEMENTS // max(1, batch * heads * columns))
    valid = valid.to(query.device)
    scores = torch.zeros(batch, rows if axis == "query" else columns, device=query.device)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        width = min(columns, stop) if call.causal else columns  # causal rows never see a later key
        block = query[:, :, start:stop].float().reshape(batch, kv_heads, groups, stop - start, -1)
        logits = (block @ keys[..., :width, :].transpose(-1, -2)).mul_(call.scaling).reshape(batch, heads, -1, width)
        if call.causal:
            later = torch.arange(width, device=query.device) > torch.arange(start, stop, device=query.device)[:, None]
            logits.masked_fill_(later, torch.finfo(torch.float32).min)
        elif call.mask is not None:
            mask = call.mask[..., :width] if call.mask.shape[-2] == 1 else call.mask[..., start:stop, :width]
            if mask.dtype == torch.bool:
                logits.masked_fill_(~mask, torch.finfo(torch.float32).min)
            else:
                logits.add_(mask.float())
        attention = logits.softmax(dim=-1).reshape(batch, kv_heads, groups, -1, width)
        rows_valid = valid[:, start:stop]
        rebuilt = (attention @ values[..., :width, :]).reshape(batch, heads, -1, values.shape[-1])
        error = ((rebuilt - output[:, :, start:stop]).abs().amax(dim=(1, 3)) * rows_valid).amax()
        if error > tolerance * scale:
            raise LightningXAIError(
                f"The attention rebuilt from q, k, v and the mask differs from the model's output by "
                f"{float(error / scale):.2e} of max |V| (more than float rounding): this model's attention is not "
                "softmax(q k^T * scaling + mask). Use GradSAM() (the eager maps) for it."
            )
        block_gradient = gradient[:, :, start:stop].reshape(batch, kv_heads, groups, stop - start, -1)
        positive = (block_gradient @ values[..., :width, :].transpose(-1, -2)).clamp_min_(0)  # ReLU(dy/dA)
        weighted = (attention.mul_(positive)).reshape(batch, heads, -1, width).sum(dim=1)  # [B, rows, keys]
        weighted = weighted * (rows_valid[:, :, None] & valid[:, None, :width])
        if axis == "query":
            scores[:, start:stop] = weighted.sum(dim=-1)
        else:
            scores[:, :width] += weighted.sum(dim=-2)
    return scores


def streamed_grad_sam(
    calls: Sequence[AttentionCall],
    output_gradients: Sequence[Tensor],
    valid_mask: Tensor,
    axis: Axis = "query",
    chunk_size: int | None = None,
) -> Tensor:
    """:func:`grad_sam` from each attention call's q, k, v and output gradient, without any whole ``T x T`` map.

    With ``O = A V`` the only use of ``A``, ``dy/dA = dy/dO V^T``. Per layer, blocks of ``chunk_size`` query rows
    of ``A = softmax(q k^T * scaling + mask)`` and of ``dy/dA`` are rebuilt, multiplied (ReLU on the gradient),
    summed over heads, masked to real tokens and reduced over keys (``axis="query"``) or queries (``"key"``)
    before the next block: memory ``O(rows x T)`` per block, ``O(T)`` per layer kept. Each block's ``A V`` is checked
    against the model's output ``O`` (a model whose attention is not a plain masked softmax is refused).

    Args:
        calls: the pass's attention calls (:attr:`lightning_xai.capture.base.AttentionRecord.calls`), in order.
        output_gradients: per call, ``d y / d O`` of the explained logit, ``[B, T, H, d_v]``.
        valid_mask: ``[B, T]`` bool, real tokens; padded rows and columns are excluded and padding gets 0.
        axis: as :func:`grad_sam`.
        chunk_size: query rows per block; default: as many as keep a ``[B, H, rows, T]`` float32 block within
            :data:`CHUNK_ELEMENTS` elements (at least one row).

    Returns:
        ``[B, T]`` float32, equal to :func:`grad_sam` on the maps up to float rounding.

    Example:
        >>> import torch
        >>> from lightning_xai.capture.base import AttentionCall
        >>> q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)  # 2 heads share k, v
        >>> A = (q @ k.transpose(-1, -2) * 0.5).softmax(-1)
        >>> O = (A @ v).transpose(1, 2)  # [B, T, H, d], as attention functions return it
        >>> dO = torch.randn_like(O)
        >>> G = dO.transpose(1, 2) @ v.transpose(-1, -2)  # dy/dA = dy/dO V^T
        >>> call = AttentionCall(q, k, v, mask=None, causal=False, scaling=0.5, output=O)
        >>> valid = torch.ones(1, 3, dtype=torch.bool)
        >>> torch.allclose(streamed_grad_sam([call], [dO], valid, chunk_size=2), grad_sam([A], [G], valid))
        True
    """
    if axis not in ("query", "key"):
        raise ValueError(f"axis must be 'query' or 'key', got {axis!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    if len(calls) == 0 or len(calls) != len(output_gradients):
        raise ValueError(f"Need one output gradient per attention call, got {len(calls)} calls, "
                         f"{len(output_gradients)} gradients")
    total: Tensor | None = None
    with torch.autocast(calls[0].query.device.type, enabled=False):  # float32 blocks, also under mixed precision
        for call, gradient in zip(calls, output_gradients, strict=True):
            layer = _layer_scores(call, gradient, valid_mask.bool(), axis, chunk_size)
            total = layer if total is None else total + layer
    assert total is not None
    num_heads = calls[0].query.shape[1]
    n = valid_mask.to(total.device).sum(dim=1).clamp_min(1).to(total.dtype)
    return total / (len(calls) * num_heads * n[:, None])


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
        attention: ``"eager"`` (default: the recorded ``[B, H, T, T]`` maps of every layer and their gradients) or
            ``"sdpa"`` for long inputs: the pass runs on the model's sdpa attention and each layer's maps are
            rebuilt in blocks of query rows from ``q, k, v`` and ``dy/dO`` (:func:`streamed_grad_sam`), so memory
            grows with ``T``, not ``T^2``; equal to ``"eager"`` up to float rounding. The batch's pass runs on sdpa
            only when no other method of the call needs the maps (else they are recorded and read here too).
            Refused where the family cannot run such a pass (attention computed inside the model's own modules,
            windows, soft-capped attention logits).
        chunk_size: ``attention="sdpa"``: query rows per block (default: see :func:`streamed_grad_sam`).

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

    def __init__(
        self, axis: Axis = "query", attention: AttentionBackend = "eager", chunk_size: int | None = None
    ) -> None:
        if axis not in ("query", "key"):
            raise ValueError(f"GradSAM(axis=...) must be 'query' or 'key', got {axis!r}")
        if attention not in ("eager", "sdpa"):
            raise ValueError(f"GradSAM(attention=...) must be 'eager' or 'sdpa', got {attention!r}")
        if chunk_size is not None and (attention != "sdpa" or chunk_size < 1):
            raise ValueError(f"GradSAM(chunk_size=...) is a positive number of rows with attention='sdpa', got "
                             f"chunk_size={chunk_size!r}, attention={attention!r}")
        self.axis: Axis = axis
        self.attention: AttentionBackend = attention
        self.chunk_size = chunk_size

    def requirements(self) -> frozenset[str]:
        """The maps and their gradients (``"eager"``), or a pass on sdpa keeping q, k, v and outputs (``"sdpa"``)."""
        return frozenset({"attention_outputs"}) if self.attention == "sdpa" else self.needs

    def __repr__(self) -> str:
        settings = f"axis={self.axis!r}"
        if self.attention != "eager":
            settings += f", attention={self.attention!r}, chunk_size={self.chunk_size!r}"
        return f"GradSAM({settings})"

    def explain(self, forward: ForwardPass) -> Tensor:
        """Grad-SAM map of the pass (shares the cached attention gradients, or the attention outputs' on sdpa)."""
        if not forward.attentions:  # a pass on sdpa (attention="sdpa" and no method of the batch needs the maps)
            if not forward.attention_calls:
                raise LightningXAIError("Grad-SAM found neither attention maps nor attention calls in this pass")
            output_gradients = forward.attention_output_gradients()
            with torch.no_grad():
                return streamed_grad_sam(forward.attention_calls, output_gradients, forward.valid_mask, self.axis,
                                         self.chunk_size)
        gradients = forward.attention_gradients()
        with torch.no_grad():
            if forward.window_layouts is not None:
                return windowed_grad_sam(forward.attentions, gradients, forward.window_layouts, self.axis)
            return grad_sam(forward.attentions, gradients, forward.valid_mask, self.axis)
