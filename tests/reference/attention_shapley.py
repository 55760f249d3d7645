"""Attention-Shapley (Eggen et al. 2025) written from the definitions: the games' characteristic functions and
Shapley values by enumerating every coalition with the textbook weights (tiny inputs only)."""

import copy
import itertools
import math

import torch


def mean_attention_reference(model, inputs_row: dict, grad_weighted: bool = False) -> torch.Tensor:
    model = copy.deepcopy(model).eval()
    model.set_attn_implementation("eager")
    out = model(**inputs_row, output_attentions=True)
    grads = [None] * len(out.attentions)
    if grad_weighted:
        c = int(out.logits[0].argmax())
        grads = torch.autograd.grad(out.logits[0, c], out.attentions)
    N = out.attentions[0].shape[-1]
    total = torch.zeros(N, N, dtype=torch.float64)
    count = 0
    for a, g in zip(out.attentions, grads, strict=False):
        for h in range(a.shape[1]):
            w = a[0, h].detach().double()
            if g is not None:
                w = w * g[0, h].double().clamp(min=0)
            total += w
            count += 1
    return total / count


def mutual_value(A, S):
    S = list(S)
    if len(S) == 0:
        return 0.0
    if len(S) == 1:
        return float(A[S[0], S[0]])
    return sum(float(A[i, j]) for i in S for j in S if i != j)


def max_mutual_value(A, S):
    S = list(S)
    if len(S) == 0:
        return 0.0
    if len(S) == 1:
        return float(A[S[0], S[0]])
    return sum(max(float(A[i, j]), float(A[j, i])) for i, j in itertools.combinations(S, 2))


def shapley_by_enumeration(A, value) -> torch.Tensor:
    n = A.shape[0]
    phi = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for S in itertools.combinations(others, size):
                phi[i] += weight * (value(A, S + (i,)) - value(A, S))
    return phi
