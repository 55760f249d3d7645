"""Integrated gradients with any quadrature, written from the formulas: one sample, explicit loop over the nodes.

IG_t = Σ_d (e_td − e'_td) · Σ_k w_k ∂y_c/∂e_td (e' + α_k (e − e')), accumulated in float64.
Gauss-Legendre nodes and weights are computed here from the Legendre recurrence (Newton's method on P_m, weights
2 / ((1 − x²) P_m'(x)²)), not taken from numpy, so the package's ``quadrature`` is checked against the textbook rule.
"""

import copy
import math

import torch

from reference.gradients import _run_with_embeddings


def legendre(m: int, x: float) -> tuple[float, float]:
    """P_m(x) and P_m'(x) by the three-term recurrence (k+1) P_{k+1} = (2k+1) x P_k − k P_{k−1}."""
    p_prev, p = 1.0, x
    for k in range(1, m):
        p_prev, p = p, ((2 * k + 1) * x * p - k * p_prev) / (k + 1)
    derivative = m * (x * p - p_prev) / (x * x - 1)
    return p, derivative


def gauss_legendre(m: int) -> list[tuple[float, float]]:
    """``[(alpha, weight)]`` on [0, 1], ascending alpha: roots of P_m mapped by alpha = (1 + x)/2, weight w/2."""
    if m == 1:
        return [(0.5, 1.0)]
    nodes = []
    for i in range(1, m + 1):
        x = math.cos(math.pi * (i - 0.25) / (m + 0.5))  # classic initial guess of the i-th root
        for _ in range(100):
            p, dp = legendre(m, x)
            step = p / dp
            x -= step
            if abs(step) < 1e-15:
                break
        _, dp = legendre(m, x)
        nodes.append(((1 + x) / 2, 1 / ((1 - x * x) * dp * dp)))  # w/2 with w = 2 / ((1 - x²) P'²)
    return sorted(nodes)


def rule(method: str, m: int) -> list[tuple[float, float]]:
    """The nodes and weights of each ``method`` (captum's definitions, its trapezoid included)."""
    if method == "gausslegendre":
        return gauss_legendre(m)
    if method == "riemann_right":
        return [(k / m, 1 / m) for k in range(1, m + 1)]
    if method == "riemann_left":
        return [(k / m, 1 / m) for k in range(m)]
    if method == "riemann_middle":
        return [((k + 0.5) / m, 1 / m) for k in range(m)]
    if method == "riemann_trapezoid":  # captum: linspace(0, 1, m) with weights 1/m, the ends halved
        return [(k / (m - 1), (0.5 if k in (0, m - 1) else 1.0) / m) for k in range(m)]
    raise ValueError(method)


def keep_special_baseline(model, ids: list[int], special_ids: set[int], fill_id: int) -> torch.Tensor:
    """``[1, P, D]`` word embeddings of the sequence with every non-special id replaced by ``fill_id``."""
    baseline_ids = torch.tensor([[t if t in special_ids else fill_id for t in ids]])
    return model.get_input_embeddings()(baseline_ids).detach()


def integrated_gradients_quadrature_reference(model, inputs_row: dict, target: int, steps: int, method: str,
                                              baseline_embeddings=None):
    """Returns (IG per embedding position [P], logit(x) − logit(baseline)); baseline default: zeros."""
    model = copy.deepcopy(model).eval()

    def base_of(e):
        return torch.zeros_like(e) if baseline_embeddings is None else baseline_embeddings.to(e.dtype)

    total = None
    for alpha, weight in rule(method, steps):
        logits, x, e = _run_with_embeddings(model, inputs_row, lambda e, a=alpha: base_of(e) + a * (e - base_of(e)))
        (g,) = torch.autograd.grad(logits[0, target], x)
        total = weight * g.double() if total is None else total + weight * g.double()
    ig = ((e - base_of(e)).double() * total)[0].sum(-1)
    with torch.no_grad():
        full = _run_with_embeddings(model, inputs_row, lambda e: e.clone())[0][0, target]
        base = _run_with_embeddings(model, inputs_row, base_of)[0][0, target]
    return ig.float(), float(full - base)
