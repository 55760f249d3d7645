"""Gradient x input and integrated gradients written from the papers: one sample, explicit loop over IG steps."""

import copy

import torch


def _run_with_embeddings(model, inputs_row: dict, make_embeddings):
    """Forward where the output of get_input_embeddings() is replaced by make_embeddings(original)."""
    holder = {}

    def hook(_m, _a, output):
        holder["e"] = output.detach()
        holder["x"] = make_embeddings(output.detach()).requires_grad_()
        return holder["x"]

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        logits = model(**inputs_row).logits
    finally:
        handle.remove()
    return logits, holder["x"], holder["e"]


def gradient_x_input_reference(model, inputs_row: dict, target: int | None = None) -> torch.Tensor:
    model = copy.deepcopy(model).eval()
    logits, x, e = _run_with_embeddings(model, inputs_row, lambda e: e.clone())
    c = int(logits[0].argmax()) if target is None else target
    (g,) = torch.autograd.grad(logits[0, c], x)
    scores = [float((e[0, t].double() * g[0, t].double()).sum()) for t in range(e.shape[1])]
    return torch.tensor(scores, dtype=torch.float32)


def integrated_gradients_reference(model, inputs_row: dict, target: int, steps: int, baseline_id=None):
    """Returns (IG per embedding position [P], logit(x) - logit(baseline))."""
    model = copy.deepcopy(model).eval()
    emb = model.get_input_embeddings()

    def base_of(e):
        return torch.zeros_like(e) if baseline_id is None else emb.weight.detach()[baseline_id].expand_as(e).clone()

    total = None
    for k in range(1, steps + 1):
        alpha = k / steps
        logits, x, e = _run_with_embeddings(model, inputs_row, lambda e, a=alpha: base_of(e) + a * (e - base_of(e)))
        (g,) = torch.autograd.grad(logits[0, target], x)
        total = g.double() if total is None else total + g.double()
    ig = ((e - base_of(e)).double() * total / steps)[0].sum(-1)
    with torch.no_grad():
        full = _run_with_embeddings(model, inputs_row, lambda e: e.clone())[0][0, target]
        base = _run_with_embeddings(model, inputs_row, base_of)[0][0, target]
    return ig.float(), float(full - base)
