"""Concept activation vectors (CAVs) from the activations of every token of every concept example.

Eggen, Lysnæs-Larsen & Strümke (2025, arXiv 2508.08966, method 2; code ``ttcav/cav/train_cav.py``) train a CAV
for concept ``C`` at layer ``l`` as follows (Kim et al. 2018's TCAV, at token level):

1. the output of block ``l`` for every concept example, **every token** of it (the ``[CLS]``/prefix tokens
   included), flattened to ``(#examples · N) × d`` rows labelled 1;
2. negatives: as many examples as the concept has, drawn per CAV (seed ``i``) from the other concepts of the same
   set (relative CAVs) or from a random set, all their tokens labelled 0;
3. a logistic regression (scikit-learn defaults: L2 penalty with ``C = 1``, intercept not penalised) and the unit
   vector of its weights, ``v_C^l = w / ‖w‖``;
4. repeated for ``i = 0 .. num_cavs-1`` (50 in the paper): only the negatives change between CAVs.

Here every CAV of a layer is fitted in ONE batched Newton (IRLS) solve on the activations' device, to the exact
regularised optimum (gradient below ``tolerance``). The authors' scikit-learn call stops at lbfgs' ``tol=1e-4``,
so their CAV directions depend on where lbfgs stops (measured on MiniLM token activations: cosine 0.997 between
that and the optimum); the optimum is reproducible on any device. Padding tokens are never rows (text examples are
padded to a batch width; only real tokens count).

Random CAVs (TCAV's null distribution, Kim et al. 2018 §3.5): both sides are disjoint random draws from the same
pool of examples, so a concept's scores can be compared with those of directions that mean nothing.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> direction = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
    >>> concept = TokenActivations(torch.randn(60, 8, generator=g) + 2 * direction, torch.arange(60) // 3, 20)
    >>> pool = TokenActivations(torch.randn(180, 8, generator=g), torch.arange(180) // 3, 60)
    >>> cavs = concept_cavs(concept, pool, num_cavs=4)
    >>> cavs.shape, bool((cavs @ direction > 0.9).all())
    (torch.Size([4, 8]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenActivations", "concept_cavs", "fit_cavs", "random_cavs"]


@dataclass(frozen=True)
class TokenActivations:
    """The activations of every real token of every example of one set, at one layer.

    Attributes:
        values: ``[M, d]`` one row per token (of every example).
        example: ``[M]`` long, the example (``0 .. count-1``) each row belongs to.
        count: number of examples.
    """

    values: Tensor
    example: Tensor
    count: int

    @classmethod
    def from_hidden(cls, hidden: Tensor, valid: Tensor) -> TokenActivations:
        """From a block output ``[B, N, d]`` and its real tokens ``[B, N]`` (padding dropped).

        Example:
            >>> import torch
            >>> acts = TokenActivations.from_hidden(torch.ones(2, 3, 4), torch.tensor([[1, 1, 0], [1, 1, 1]]).bool())
            >>> acts.values.shape, acts.example.tolist(), acts.count
            (torch.Size([5, 4]), [0, 0, 1, 1, 1], 2)
        """
        valid = valid.bool()
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(valid)
        return cls(hidden[valid], rows[valid], int(hidden.shape[0]))

    @classmethod
    def concatenate(cls, parts: Sequence[TokenActivations]) -> TokenActivations:
        """Several sets (or chunks of one set) as one, examples renumbered in order."""
        offsets, total = [], 0
        for part in parts:
            offsets.append(total)
            total += part.count
        return cls(
            torch.cat([p.values for p in parts]),
            torch.cat([p.example + offset for p, offset in zip(parts, offsets, strict=True)]),
            total,
        )

    def rows_of(self, examples: Tensor) -> Tensor:
        """``[M]`` bool: the rows of the given example indices."""
        chosen = torch.zeros(self.count, dtype=torch.bool, device=self.values.device)
        chosen[examples.to(self.values.device)] = True
        return chosen[self.example]


def fit_cavs(
    rows: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    inverse_regularization: float = 1.0,
    max_iter: int = 100,
    tolerance: float = 1e-7,
) -> Tensor:
    """Fit K L2-regularised logistic regressions at once and return their unit weight vectors ``[K, d]``.

    CAV ``k`` separates the rows where ``positive[:, k]`` (label 1) from those where ``negative[:, k]`` (label 0),
    minimising scikit-learn's objective ``C · Σ_i logloss_i + ½‖w‖²`` (intercept unpenalised). Solved by Newton's
    method (iteratively reweighted least squares) with a backtracking line search per CAV, all CAVs batched: about
    ten steps reach the optimum to machine precision, where first-order methods and L-BFGS need hundreds on these
    nearly separable, badly scaled token activations (measured on MiniLM's: 9 steps).

    Args:
        rows: ``[M, d]`` activations (every token of every example taking part in any CAV).
        positive: ``[M, K]`` bool, rows labelled 1 for each CAV.
        negative: ``[M, K]`` bool, rows labelled 0 for each CAV.
        inverse_regularization: scikit-learn's ``C``.
        max_iter: most Newton steps.
        tolerance: stop when every entry of every CAV's gradient, divided by its number of rows, is below this.

    Returns:
        ``[K, d]`` unit CAVs, in the dtype of ``rows``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[2.0, 0.0], [3.0, 1.0], [-2.0, 0.0], [-3.0, -1.0]])
        >>> pos = torch.tensor([[True], [True], [False], [False]])
        >>> fit_cavs(x, pos, ~pos).round(decimals=4)  # scikit-learn: [[0.9923, 0.1237]]
        tensor([[0.9923, 0.1237]])
    """
    if rows.dim() != 2 or positive.shape != negative.shape or positive.shape[0] != rows.shape[0]:
        raise ValueError(
            f"rows must be [M, d] and positive/negative [M, K]; got {tuple(rows.shape)}, {tuple(positive.shape)}, "
            f"{tuple(negative.shape)}"
        )
    if (positive & negative).any():
        raise ValueError("a row cannot be both a positive and a negative of the same CAV")
    if bool((positive.sum(0) == 0).any() or (negative.sum(0) == 0).any()):
        raise ValueError("every CAV needs at least one positive and one negative row")
    c = float(inverse_regularization)
    x = torch.cat([rows.detach(), torch.ones_like(rows[:, :1])], dim=1).to(torch.float64)  # bias column
    label = positive.to(torch.float64)
    member = (positive | negative).to(torch.float64)
    penalty = torch.ones(x.shape[1], dtype=torch.float64, device=x.device)
    penalty[-1] = 0.0  # the intercept is not penalised
    start = torch.zeros(positive.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    with torch.autocast(x.device.type, enabled=False):  # full precision also under a mixed-precision trainer
        weights = _newton(x, label, member, penalty, c, start, max_iter, tolerance)
    return torch.nn.functional.normalize(weights[:, :-1], dim=1).to(rows.dtype)


def _newton(
    x: Tensor,
    label: Tensor,
    member: Tensor,
    penalty: Tensor,
    c: float,
    weights: Tensor,
    max_iter: int,
    tolerance: float,
) -> Tensor:
    """Damped Newton steps from ``weights`` ``[K, width]`` until every gradient entry / rows < ``tolerance``."""
    size = member.sum(0)  # [K] rows per CAV
    num_cavs = weights.shape[0]
    x32 = x.float()

    def objective(w: Tensor) -> Tensor:  # [K]
        z = x @ w.T
        loss = member * (torch.nn.functional.softplus(z) - label * z)  # logloss = log(1 + e^z) - y z
        return c * loss.sum(0) + 0.5 * (penalty * w * w).sum(1)

    value = objective(weights)
    for _ in range(max_iter):
        z = x @ weights.T  # [M, K]
        p = torch.sigmoid(z)
        gradient = c * ((member * (p - label)).T @ x) + penalty * weights  # [K, width]
        if float((gradient.abs().amax(1) / size).max()) < tolerance:
            break
        curvature = (member * p * (1 - p)).T.float()  # [K, M]
        # the Hessian in float32 (its condition is bounded by the penalty); the step solved in float64
        hessian = _weighted_gram(x32, curvature).double() * c
        hessian = hessian + torch.diag_embed(penalty + 1e-10).expand_as(hessian)
        step = torch.linalg.solve(hessian, gradient)
        slope = (gradient * step).sum(1)  # > 0: the Newton direction descends
        scale = torch.ones(num_cavs, dtype=torch.float64, device=x.device)
        todo = torch.ones(num_cavs, dtype=torch.bool, device=x.device)
        candidate_value = value
        for _halving in range(40):  # Armijo backtracking, per CAV
            candidate = weights - scale[:, None] * step
            candidate_value = torch.where(todo, objective(candidate), candidate_value)
            todo = todo & (candidate_value > value - 1e-4 * scale * slope)
            if not bool(todo.any()):
                break
            scale = torch.where(todo, scale / 2, scale)
        weights = weights - scale[:, None] * step
        value = objective(weights)
    return weights


def _weighted_gram(x: Tensor, weights: Tensor, budget: int = 1 << 26) -> Tensor:
    """``[K, d, d]`` ``x^T diag(weights_k) x`` for every row of ``weights`` ``[K, M]``, batched.

    One batched matmul per chunk of CAVs (several times faster on CPU than a loop of matmuls); a chunk holds at
    most ``budget`` elements of the weighted copies of ``x`` (256 MiB in float32).
    """
    step = max(1, budget // max(1, x.numel()))
    xt = x.T[None]
    return torch.cat([torch.matmul(xt * weights[i : i + step, None, :], x) for i in range(0, weights.shape[0], step)])


def _draw(count: int, size: int, seed: int, device: torch.device) -> Tensor:
    """``size`` distinct indices of ``range(count)`` from a private generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:size].to(device)


def concept_cavs(
    concept: TokenActivations,
    negatives: TokenActivations,
    num_cavs: int,
    *,
    seed: int = 0,
    inverse_regularization: float = 1.0,
    max_iter: int = 100,
    tolerance: float = 1e-7,
) -> Tensor:
    """``num_cavs`` CAVs of one concept at one layer: every concept example vs a fresh draw of negatives per CAV.

    As the authors (``train_multiple_cavs``): the positives are the whole concept set for every CAV; CAV ``i``
    takes ``concept.count`` negative examples (all their tokens) drawn without replacement from ``negatives``
    with seed ``seed + i``.

    Args:
        concept: the concept examples' token activations.
        negatives: the pool negatives are drawn from: a random set, or the other concepts of the set.
        num_cavs: how many CAVs.
        seed: seed of the first draw.
        inverse_regularization: scikit-learn's ``C``.
        max_iter: most Newton steps.
        tolerance: gradient tolerance.

    Returns:
        ``[num_cavs, d]`` unit CAVs.
    """
    if negatives.count < concept.count:
        raise ValueError(
            f"{concept.count} concept examples need at least as many negatives to draw from; got {negatives.count}"
        )
    device = concept.values.device
    rows = torch.cat([concept.values, negatives.values.to(device)])
    positive = torch.zeros(rows.shape[0], num_cavs, dtype=torch.bool, device=device)
    positive[: concept.values.shape[0]] = True
    negative = torch.zeros_like(positive)
    for i in range(num_cavs):
        chosen = negatives.rows_of(_draw(negatives.count, concept.count, seed + i, device))
        negative[concept.values.shape[0] :, i] = chosen.to(device)
    return fit_cavs(
        rows, positive, negative, inverse_regularization=inverse_regularization, max_iter=max_iter, tolerance=tolerance
    )


def random_cavs(
    pool: TokenActivations,
    num_cavs: int,
    size: int,
    *,
    seed: int = 0,
    inverse_regularization: float = 1.0,
    max_iter: int = 100,
    tolerance: float = 1e-7,
) -> Tensor:
    """``num_cavs`` CAVs of random "concepts": two disjoint random draws of examples from ``pool`` per CAV.

    CAV ``i`` shuffles the pool's examples with seed ``seed + i`` and separates the first ``m`` from the next
    ``m``, ``m = min(size, pool.count // 2)``: TCAV's random-vs-random CAVs, the scores a direction that means
    nothing gets.

    Args:
        pool: the examples to draw from (a random set, or every concept of a relative set).
        num_cavs: how many CAVs.
        size: examples per side (the concepts' size), capped at half the pool.
        seed: seed of the first shuffle.
        inverse_regularization: scikit-learn's ``C``.
        max_iter: most Newton steps.
        tolerance: gradient tolerance.

    Returns:
        ``[num_cavs, d]`` unit CAVs.
    """
    half = min(size, pool.count // 2)
    if half < 1:
        raise ValueError(f"random CAVs need a pool of at least 2 examples; got {pool.count}")
    device = pool.values.device
    positive = torch.zeros(pool.values.shape[0], num_cavs, dtype=torch.bool, device=device)
    negative = torch.zeros_like(positive)
    for i in range(num_cavs):
        order = _draw(pool.count, 2 * half, seed + i, device)
        positive[:, i] = pool.rows_of(order[:half])
        negative[:, i] = pool.rows_of(order[half:])
    return fit_cavs(
        pool.values,
        positive,
        negative,
        inverse_regularization=inverse_regularization,
        max_iter=max_iter,
        tolerance=tolerance,
    )
