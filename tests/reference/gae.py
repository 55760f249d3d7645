"""GAE (Chefer et al., ICCV 2021) written from the paper: full relevance matrix, explicit loop over layers."""

import torch

from reference.attention import eager_outputs


def gae_reference(model, inputs_row: dict, target: int | None = None, query: int = 0) -> torch.Tensor:
    _, out = eager_outputs(model, inputs_row)
    attentions = list(out.attentions)
    for a in attentions:
        a.retain_grad()
    c = int(out.logits[0].argmax()) if target is None else target
    out.logits[0, c].backward()
    N = attentions[0].shape[-1]
    R = torch.eye(N, dtype=torch.float64)
    for a in attentions:
        A, G = a[0].detach().double(), a.grad[0].double()
        H = A.shape[0]
        Abar = torch.zeros(N, N, dtype=torch.float64)
        for h in range(H):
            Abar += torch.clamp(G[h] * A[h], min=0) / H
        R = R + Abar @ R
    return R[query].float()
