"""Grad-SAM written from the paper, one sample at a time, with explicit loops (slow and obvious).

Independent of lightning_xai's capture: uses HF's own eager attention with ``output_attentions=True``,
``retain_grad`` and ``.backward()`` on a private deep copy of the model.
"""

import copy

import torch


def grad_sam_reference(model, inputs_row: dict, target: int | None, axis: str = "query") -> torch.Tensor:
    """Relevance [N] for ONE unpadded sample (inputs_row tensors have batch dim 1, no padding)."""
    model = copy.deepcopy(model).eval()
    model.set_attn_implementation("eager")
    out = model(**inputs_row, output_attentions=True)
    attentions = list(out.attentions)
    for a in attentions:
        a.retain_grad()
    c = int(out.logits[0].argmax()) if target is None else target
    out.logits[0, c].backward()
    L = len(attentions)
    H, N = attentions[0].shape[1], attentions[0].shape[-1]
    scores = torch.zeros(N, dtype=torch.float64)
    for layer in range(L):
        A = attentions[layer][0].detach().double()
        G = attentions[layer].grad[0].double()
        for h in range(H):
            for i in range(N):
                for j in range(N):
                    m = A[h, i, j] * max(G[h, i, j].item(), 0.0)
                    if axis == "query":
                        scores[i] += m
                    else:
                        scores[j] += m
    return (scores / (L * H * N)).float()
