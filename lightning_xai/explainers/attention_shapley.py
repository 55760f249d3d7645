r"""Attention-Shapley: Shapley values of games defined by attention (Eggen, Lysnæs-Larsen & Strümke 2025, method 1).

arXiv:2508.08966; reference code ``marteeggen/Attention-based-XAI-for-transformers`` (``shapley/methods/*``).
The game matrix is the attention averaged over layers and heads,

.. math::

    \bar A = \frac{1}{LH}\sum_{l,h} W^{l,h}, \qquad
    W^{l,h} = A^{l,h}\ (\texttt{weights="attention"}) \quad\text{or}\quad
    A^{l,h} \odot \mathrm{ReLU}(\partial y_c / \partial A^{l,h})\ (\texttt{"grad\_attention"}),

restricted (without re-normalisation) to the ``n`` content tokens (real, not [CLS]/[SEP]/prefix), which are the
players. Games (``game=``):

* ``"mutual"``: :math:`v(\{i\}) = \bar A_{ii}`, :math:`v(S) = \sum_{i \ne j \in S} \bar A_{ij}` (ordered pairs) for
  :math:`|S| \ge 2`. Exact closed form, batched, ``O(n^2)``:
  :math:`\phi_i = \bar A_{ii}/n + \sum_{j \ne i} \big[(\bar A_{ij} + \bar A_{ji})/2 - \bar A_{jj}/(n(n-1))\big]`
  (Eggen et al.'s ``C(n) = sum_s binom(n-2, s-1) s!(n-s-1)!/n!`` simplifies to ``1/2 - 1/(n(n-1))``).
* ``"cls"``: :math:`v(S) = \sum_{i \in S} \bar A_{q i}`, additive, so :math:`\phi_i = \bar A_{q i}` (the prediction
  row ``q``: the [CLS] row of the encoders, from the model family).
* ``"max_mutual"``: :math:`v(\{i\}) = \bar A_{ii}`, :math:`v(S) = \sum_{\{i,j\} \subseteq S} \max(\bar A_{ij},
  \bar A_{ji})` (unordered pairs). Exact by enumerating all :math:`2^n` coalitions for
  ``n <= exact_max_tokens`` (as the reference code), sampled above: ``num_coalitions`` coalitions whose sizes
  ``z = 1..n-1`` are drawn with the KernelSHAP size weights :math:`\propto 1/(z(n-z))` and whose members are
  uniform; every sampled ``S`` serves every player ``i`` through ``T = S \ {i}``, importance-weighted by the
  Shapley weight of ``|T|`` over the probability of drawing ``T`` (an unbiased estimate; the reference code's
  weighted sum is not normalised by the number of samples and is only meant for ranking). Each row draws from its
  own generator seeded with ``seed``, so a row's scores do not depend on its batch. ``num_coalitions=None``
  uses the exact closed form instead: max-mutual is the mutual game of the matrix with off-diagonal entries
  :math:`\max(\bar A_{ij}, \bar A_{ji})/2`.

Non-content tokens get 0. With ``weights="grad_attention"`` the gradients are
:meth:`ForwardPass.attention_gradients` (one backward shared with Grad-SAM and GAE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from lightning_xai.explainers.base import Explainer, ForwardPass, read_rows

Game = Literal["mutual", "cls", "max_mutual"]
Weights = Literal["attention", "grad_attention"]
_GAMES = ("mutual", "cls", "max_mutual")
_WEIGHTS = ("attention", "grad_attention")


def mean_attention(attentions: Sequence[Tensor], gradients: Sequence[Tensor] | None = None) -> Tensor:
    """``[B, N, N]`` float32 mean over layers and heads of ``A`` (or ``A * ReLU(grad)`` when gradients are given)."""
    if len(attentions) == 0:
        raise ValueError("Need at least one attention map")
    total: Tensor | None = None
    for layer, attention in enumerate(attentions):
        weight = attention.detach().float()
        if gradients is not None:
            weight = weight * gradients[layer].float().clamp_min(0)
        weight = weight.mean(dim=1)
        total = weight if total is None else total + weight
    assert total is not None
    return total / len(attentions)


def mutual_shapley(matrix: Tensor, content_mask: Tensor) -> Tensor:
    r"""Exact Shapley values of the mutual game of each row's content sub-matrix (batched closed form).

    Args:
        matrix: ``[B, N, N]`` game matrix.
        content_mask: ``[B, N]`` players.

    Returns:
        ``[B, N]`` float32, 0 off the players; sums to :math:`v(\text{all players})` per row.

    Example:
        >>> import torch
        >>> A = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]]])
        >>> phi = mutual_shapley(A, torch.tensor([[False, True, True]]))  # players 1 and 2, n = 2
        >>> [round(x, 4) for x in phi[0].tolist()]  # 0.6/2 + 0.7/2 - 0.2/2, 0.2/2 + 0.7/2 - 0.6/2
        [0.0, 0.55, 0.15]
    """
    content = content_mask.to(matrix.device).to(torch.float32)
    sub = matrix.float() * content[:, :, None] * content[:, None, :]
    n = content.sum(dim=1, keepdim=True)
    diag = torch.diagonal(sub, dim1=1, dim2=2)
    off = sub - torch.diag_embed(diag)
    pairs = off.sum(dim=2) + off.sum(dim=1)
    trace = diag.sum(dim=1, keepdim=True)
    phi = diag / n.clamp_min(1) + pairs / 2 - (trace - diag) / (n * (n - 1)).clamp_min(1)
    return torch.where(content > 0, phi, torch.zeros_like(phi))


def _max_mutual_exact(matrix: Tensor) -> Tensor:
    """Shapley values of the max-mutual game on an ``[n, n]`` matrix by enumerating every coalition."""
    n = matrix.shape[0]
    a = matrix.double()
    sym = torch.maximum(a, a.T).fill_diagonal_(0)
    count = 1 << n
    index = torch.arange(count, device=a.device)
    members = ((index[:, None] >> torch.arange(n, device=a.device)) & 1).to(torch.float64)  # [2^n, n]
    size = members.sum(dim=1)
    pairs = 0.5 * torch.einsum("ki,ij,kj->k", members, sym, members)
    singles = members @ torch.diagonal(a)
    value = torch.where(size >= 2, pairs, torch.where(size == 1, singles, torch.zeros_like(pairs)))
    log_weight = [math.lgamma(s + 1) + math.lgamma(n - s) - math.lgamma(n + 1) for s in range(n)]
    weight = torch.tensor(log_weight, dtype=torch.float64, device=a.device).exp()
    phi = torch.zeros(n, dtype=torch.float64, device=a.device)
    for player in range(n):
        without = index[members[:, player] == 0]
        marginal = value[without | (1 << player)] - value[without]
        phi[player] = (weight[size[without].long()] * marginal).sum()
    return phi.float()


def _max_mutual_sampled(matrix: Tensor, num_coalitions: int, generator: torch.Generator) -> Tensor:
    """Unbiased importance-sampled Shapley values of the max-mutual game (KernelSHAP-weighted coalition sizes)."""
    n = matrix.shape[0]
    a = matrix.double().cpu()
    sym = torch.maximum(a, a.T).fill_diagonal_(0)
    sizes = torch.arange(1, n, dtype=torch.float64)
    size_probability = 1.0 / (sizes * (n - sizes))
    size_probability = size_probability / size_probability.sum()
    drawn = torch.multinomial(size_probability, num_coalitions, replacement=True, generator=generator) + 1
    ranks = torch.rand(num_coalitions, n, generator=generator, dtype=torch.float64).argsort(dim=1).argsort(dim=1)
    members = (ranks < drawn[:, None]).to(torch.float64)  # [M, n], uniform members given the size
    diag = torch.diagonal(a)
    # T = S \ {i}: |T| = |S| - [i in S]
    t_size = drawn[:, None].to(torch.float64) - members  # [M, n]
    to_t = members @ sym  # sum_{j in S} sym_ij = sum_{j in T} sym_ij (zero diagonal)
    single_t = (members @ diag)[:, None] - members * diag  # sum_{j in T} a_jj (used when |T| == 1)
    marginal = to_t - torch.where(t_size == 1, single_t, 0.0) + torch.where(t_size == 0, diag.expand_as(to_t), 0.0)
    log_p = torch.full((n + 1,), float("-inf"), dtype=torch.float64)
    log_p[1:n] = size_probability.log()
    k = torch.arange(n + 1, dtype=torch.float64)
    log_binom_n = (
        torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    )
    log_single = log_p - log_binom_n  # log P(S = a given coalition of size k)
    t_range = torch.arange(n, dtype=torch.long)
    log_q = torch.logaddexp(log_single[t_range], log_single[t_range + 1])  # T drawn as S = T or S = T + {i}
    t_float = t_range.double()
    log_w = torch.lgamma(t_float + 1) + torch.lgamma(n - t_float) - math.lgamma(n + 1.0)  # |T|!(n-|T|-1)!/n!
    ratio = (log_w - log_q).exp()
    phi = (ratio[t_size.long()] * marginal).mean(dim=0)
    return phi.float().to(matrix.device)


def max_mutual_shapley(
    matrix: Tensor,
    content_mask: Tensor,
    exact_max_tokens: int = 12,
    num_coalitions: int | None = 100,
    seed: int = 0,
) -> Tensor:
    """Shapley values of the max-mutual game of each row's content sub-matrix.

    Args:
        matrix: ``[B, N, N]`` game matrix.
        content_mask: ``[B, N]`` players.
        exact_max_tokens: rows with at most this many players are solved by enumerating all coalitions.
        num_coalitions: sampled coalitions per longer row; ``None``: the exact closed form for every row.
        seed: seed of each row's private generator.

    Returns:
        ``[B, N]`` float32, 0 off the players.

    Example:
        >>> import torch
        >>> A = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]]])
        >>> content = torch.tensor([[True, True, True]])
        >>> exact = max_mutual_shapley(A, content)
        >>> closed = max_mutual_shapley(A, content, exact_max_tokens=0, num_coalitions=None)
        >>> torch.allclose(exact, closed), round(float(exact.sum()), 4)  # efficiency: v(N) = 0.2 + 0.4 + 0.4
        (True, 1.0)
    """
    content = content_mask.to(matrix.device)
    if num_coalitions is None:
        a = matrix.float()
        halved = torch.maximum(a, a.transpose(1, 2)) / 2
        eye = torch.eye(a.shape[-1], dtype=torch.bool, device=a.device)
        return mutual_shapley(torch.where(eye, a, halved), content)
    if num_coalitions < 1:
        raise ValueError(f"num_coalitions must be >= 1 or None, got {num_coalitions}")
    phi = torch.zeros(content.shape, dtype=torch.float32, device=matrix.device)
    for row in range(matrix.shape[0]):
        players = content[row].nonzero()[:, 0]
        n = players.numel()
        if n == 0:
            continue
        sub = matrix[row].float()[players][:, players]
        if n == 1:
            phi[row, players] = torch.diagonal(sub)
        elif n <= exact_max_tokens:
            phi[row, players] = _max_mutual_exact(sub)
        else:
            generator = torch.Generator().manual_seed(seed)
            phi[row, players] = _max_mutual_sampled(sub, num_coalitions, generator)
    return phi


def attention_shapley(
    attentions: Sequence[Tensor],
    content_mask: Tensor,
    *,
    gradients: Sequence[Tensor] | None = None,
    game: Game = "mutual",
    exact_max_tokens: int = 12,
    num_coalitions: int | None = 100,
    seed: int = 0,
    query: int | Tensor = 0,
) -> Tensor:
    """Attention-Shapley relevance of the content tokens.

    Args:
        attentions: per layer ``[B, H, N, N]`` post-softmax attention.
        content_mask: ``[B, N]`` players (real, non-special tokens).
        gradients: per layer attention gradients (``weights="grad_attention"``), or None for plain attention.
        game: ``"mutual"``, ``"cls"`` or ``"max_mutual"``.
        exact_max_tokens: max-mutual: enumerate coalitions up to this many players.
        num_coalitions: max-mutual: sampled coalitions above; None for the exact closed form.
        seed: max-mutual sampler seed.
        query: ``"cls"`` game: the prediction row, one index for every sample or ``[B]`` indices (0: [CLS]), or
            ``[B, N]`` row weights (the weighted mean of those rows).

    Returns:
        ``[B, N]`` float32, 0 off the content tokens.
    """
    if game not in _GAMES:
        raise ValueError(f"game must be one of {_GAMES}, got {game!r}")
    matrix = mean_attention(attentions, gradients)
    content = content_mask.to(matrix.device)
    if game == "mutual":
        return mutual_shapley(matrix, content)
    if game == "cls":
        row = read_rows(matrix, query)
        return torch.where(content, row, torch.zeros_like(row))
    return max_mutual_shapley(matrix, content, exact_max_tokens, num_coalitions, seed)


class AttentionShapley(Explainer):
    """Attention-Shapley (Eggen et al. 2025, method 1): Shapley values of an attention-defined token game.

    Args:
        game: ``"mutual"`` (default; exact, batched), ``"cls"`` or ``"max_mutual"``; see the module docstring.
        weights: ``"attention"`` (Shapley-Att-*) or ``"grad_attention"`` (Shapley-Grad-Att-*, Grad-SAM-weighted).
        exact_max_tokens: max-mutual: rows with at most this many content tokens are enumerated exactly.
        num_coalitions: max-mutual: sampled coalitions for longer rows (Eggen et al.: 100); ``None``: exact closed
            form for every length.
        seed: seed of the per-row private generator of the sampler (the global RNG is never touched).

    Example:
        >>> from lightning_xai import explain
        >>> from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
        >>> model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
        >>> relevance = explain(model, inputs, [AttentionShapley()], modality=text)["attention_shapley"].relevance
        >>> relevance[0, [0, 3, 4]].tolist()  # only the content tokens are players
        [0.0, 0.0, 0.0]
    """

    name: ClassVar[str] = "attention_shapley"
    #: ``attention_gradients`` only with ``weights="grad_attention"``, ``prediction_row`` only for ``game="cls"``.
    needs: ClassVar[frozenset[str]] = frozenset({"attentions", "attention_gradients", "prediction_row"})

    def __init__(
        self,
        game: Game = "mutual",
        weights: Weights = "attention",
        exact_max_tokens: int = 12,
        num_coalitions: int | None = 100,
        seed: int = 0,
    ) -> None:
        if game not in _GAMES:
            raise ValueError(f"AttentionShapley(game=...) must be one of {_GAMES}, got {game!r}")
        if weights not in _WEIGHTS:
            raise ValueError(f"AttentionShapley(weights=...) must be one of {_WEIGHTS}, got {weights!r}")
        if num_coalitions is not None and num_coalitions < 1:
            raise ValueError(f"num_coalitions must be >= 1 or None, got {num_coalitions}")
        self.game: Game = game
        self.weights: Weights = weights
        self.exact_max_tokens = int(exact_max_tokens)
        self.num_coalitions = num_coalitions
        self.seed = int(seed)

    def requirements(self) -> frozenset[str]:
        """Attention, plus its gradients for ``"grad_attention"`` and the prediction row for the ``"cls"`` game."""
        return frozenset(
            {"attentions"}
            | ({"attention_gradients"} if self.weights == "grad_attention" else set())
            | ({"prediction_row"} if self.game == "cls" else set())
        )

    def explain(self, forward: ForwardPass) -> Tensor:
        """Attention-Shapley map of the pass."""
        gradients = forward.attention_gradients() if self.weights == "grad_attention" else None
        content = forward.valid_mask & ~forward.special_mask
        with torch.no_grad():
            return attention_shapley(
                forward.attentions,
                content,
                gradients=gradients,
                game=self.game,
                exact_max_tokens=self.exact_max_tokens,
                num_coalitions=self.num_coalitions,
                seed=self.seed,
                query=forward.prediction_rows,
            )
