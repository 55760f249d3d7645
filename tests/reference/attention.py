"""Raw attention and rollout written from the papers, one unpadded sample at a time, explicit loops.

Independent of lightning_xai: HF eager attention with ``output_attentions=True`` on a private deep copy.
Also home of the small per-sample helpers shared by the other references.
"""

import copy

import torch

SPECIAL_IDS = (0, 1, 2, 3, 4)


def unpadded_row(inputs: dict, row: int) -> dict:
    """Row ``row`` alone (batch dim 1), padding cut off."""
    single = {k: v[row : row + 1] for k, v in inputs.items()}
    if "attention_mask" in single:
        length = int(single["attention_mask"].sum())
        single = {k: v[:, :length] for k, v in single.items()}
    return single


def content_mask(inputs_row: dict, num_tokens: int) -> torch.Tensor:
    """[N] bool: text tokens that are not special ids; vision: patches (not the 1-2 prefix tokens)."""
    if "input_ids" in inputs_row:
        return torch.tensor([int(t) not in SPECIAL_IDS for t in inputs_row["input_ids"][0]])
    patches = (inputs_row["pixel_values"].shape[-1] // 4) ** 2
    return torch.arange(num_tokens) >= num_tokens - patches


def eager_outputs(model, inputs_row: dict, **kwargs):
    model = copy.deepcopy(model).eval()
    model.set_attn_implementation("eager")
    return model, model(**inputs_row, output_attentions=True, **kwargs)


def raw_attention_reference(model, inputs_row: dict, query: int = 0) -> torch.Tensor:
    _, out = eager_outputs(model, inputs_row)
    A = out.attentions[-1][0].detach().double()
    H, N = A.shape[0], A.shape[-1]
    scores = torch.zeros(N, dtype=torch.float64)
    for j in range(N):
        for h in range(H):
            scores[j] += A[h, query, j] / H
    return scores.float()


def rollout_reference(model, inputs_row: dict, query: int = 0) -> torch.Tensor:
    _, out = eager_outputs(model, inputs_row)
    N = out.attentions[0].shape[-1]
    R = torch.eye(N, dtype=torch.float64)
    for attention in out.attentions:  # first layer first: R = A_L ... A_1
        A = attention[0].detach().double().mean(dim=0) + torch.eye(N, dtype=torch.float64)
        for i in range(N):
            A[i] = A[i] / A[i].sum()
        R = A @ R
    return R[query].float()
