"""CP-LRP and AttnLRP written from the papers: explicit layer-by-layer relevance propagation (slow and obvious).

Independent of lightning_xai's hooks and of autograd: the forward of the encoder and head is recomputed in float64
from the model's weights (activations kept), then relevance is propagated backwards with the explicit rules
``R_in = rule(R_out, activations)``:

* linear (LRP-0 / epsilon / gamma, Ali et al. Eq. in Sec. 3.1; Achtibat et al. Eq. 4):
  ``R_i = x_i sum_j W'_ji R_j / stab(z'_j)``, ``W' = W + gamma W^+``, ``z' = W' x + b'``;
* LayerNorm with sigma a constant (LN-rule / identity rule): LRP-0 on the linear map
  ``y = diag(w) (I - 11^T / D) x / sigma + b``;
* element-wise activations: identity rule ``R_x = R_y`` (AttnLRP Eq. 9);
* residual / embedding sums: ``R_a = a R_z / z`` (epsilon-rule on addition);
* CP-LRP attention (AH-rule): ``O = A V`` with ``A`` constant, ``R_V[i,p] = sum_j A_ji V_ip R_O[j,p] / O[j,p]``;
* AttnLRP attention: uniform rule on ``A V`` and on ``Q K^T`` (Prop. 3.3, relevance halved between the factors,
  each split proportionally to the products) and the softmax rule of Prop. 3.1,
  ``R_S = S * (R_A - A sum_i R_A)`` per row.
"""

from __future__ import annotations

import copy

import torch

TEXT = ("bert", "roberta", "distilbert")


def _div(a, b):
    """a / b with 0 where b == 0 (a zero activation carries zero relevance)."""
    return torch.where(b == 0, torch.zeros_like(a), a / torch.where(b == 0, torch.ones_like(b), b))


def _stab(z, eps):
    return z + torch.where(z >= 0, eps, -eps)


def lin(x, module, R_z, eps=0.0, gamma=0.0):
    """Explicit epsilon / gamma rule for ``z = x W^T + b``."""
    W = module.weight
    b = module.bias if module.bias is not None else torch.zeros(W.shape[0], dtype=W.dtype)
    Wg, bg = W + gamma * W.clamp(min=0), b + gamma * b.clamp(min=0)
    z = x @ Wg.T + bg
    denominator = z if (eps == 0 and gamma == 0) else _stab(z, max(eps, 1e-12))
    # output neuron j sends x_i W'_ji / z'_j of its relevance R_j to input i
    return x * (_div(R_z, denominator) @ Wg)


def layer_norm(x, module):
    mu = x.mean(-1, keepdim=True)
    sigma = torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + module.eps)
    return (x - mu) / sigma * module.weight + module.bias, sigma


def ln_rule(x, module, R_y):
    """LRP-0 on LayerNorm with sigma constant: R_k = x_k sum_i J_ik R_i / y_i, J = diag(w/sigma)(I - 1/D)."""
    y, sigma = layer_norm(x, module)
    D = x.shape[-1]
    centering = torch.eye(D, dtype=x.dtype) - 1.0 / D
    R_x = torch.zeros_like(x)
    for t in range(x.shape[0]):
        J = (module.weight / sigma[t])[:, None] * centering  # J[i, k] = dy_i / dx_k
        R_x[t] = x[t] * (_div(R_y[t], y[t]) @ J)
    return R_x


def add_rule(a, b, R_z):
    ratio = _div(R_z, a + b)
    return a * ratio, b * ratio


def _spec(model, family):
    if family in ("bert", "roberta"):
        base = getattr(model, family)
        layers = [
            dict(q=blk.attention.self.query, k=blk.attention.self.key, v=blk.attention.self.value,
                 o=blk.attention.output.dense, ln1=blk.attention.output.LayerNorm, fc1=blk.intermediate.dense,
                 fc2=blk.output.dense, ln2=blk.output.LayerNorm)
            for blk in base.encoder.layer
        ]
        head = [base.pooler.dense, "act", model.classifier] if family == "bert" else [
            model.classifier.dense, "act", model.classifier.out_proj]
        return base, layers, False, None, head
    if family == "distilbert":
        base = model.distilbert
        layers = [
            dict(q=blk.attention.q_lin, k=blk.attention.k_lin, v=blk.attention.v_lin, o=blk.attention.out_lin,
                 ln1=blk.sa_layer_norm, fc1=blk.ffn.lin1, fc2=blk.ffn.lin2, ln2=blk.output_layer_norm)
            for blk in base.transformer.layer
        ]
        return base, layers, False, None, [model.pre_classifier, "act", model.classifier]
    base = getattr(model, family)
    layers = [
        dict(q=blk.attention.q_proj, k=blk.attention.k_proj, v=blk.attention.v_proj, o=blk.attention.o_proj,
             ln1=blk.layernorm_before, fc1=blk.mlp.fc1, fc2=blk.mlp.fc2, ln2=blk.layernorm_after)
        for blk in base.layers
    ]
    return base, layers, True, base.layernorm, [model.classifier]


def _act(family, x, where):
    if where == "head":
        return torch.relu(x) if family == "distilbert" else torch.tanh(x)
    return torch.nn.functional.gelu(x)


def _attention(p, x, heads, rule, R_out, eps, gamma):
    """Forward of one self-attention block on x [N, D] and, when R_out is given, its explicit LRP."""
    N, D = x.shape
    dh = D // heads
    q, k, v = (p[name].weight @ x.T + p[name].bias[:, None] for name in ("q", "k", "v"))
    q, k, v = (t.T.reshape(N, heads, dh).transpose(0, 1) for t in (q, k, v))  # [H, N, dh]
    S_raw = q @ k.transpose(1, 2)
    S = S_raw * dh**-0.5
    A = torch.softmax(S, dim=-1)
    AV = A @ v
    ctx = AV.transpose(0, 1).reshape(N, D)
    out = ctx @ p["o"].weight.T + p["o"].bias
    if R_out is None:
        return out, None, 0.0
    R_O = lin(ctx, p["o"], R_out, eps, gamma).reshape(N, heads, dh).transpose(0, 1)
    R_q = torch.zeros_like(q)
    R_k = torch.zeros_like(k)
    leak = 0.0
    share = 1.0 if rule == "cp_lrp" else 0.5
    # O[h,j,p] = sum_i A[h,j,i] V[h,i,p]: each product's share of R_O[h,j,p] (halved by the uniform rule)
    products = torch.einsum("hji,hip->hjip", A, v) * _div(R_O, AV)[:, :, None, :] * share
    R_v = products.sum(1)
    R_A = products.sum(-1)
    if rule == "attn_lrp":
        R_S = S * (R_A - A * R_A.sum(-1, keepdim=True))  # Prop. 3.1; constant scaling keeps relevance
        leak = float(R_A.sum() - R_S.sum())
        # S_raw[h,j,i] = sum_d Q[h,j,d] K[h,i,d]: half of R_S to each factor, split over the products
        products = torch.einsum("hjd,hid->hjid", q, k) * _div(R_S, 2 * S_raw)[..., None]
        R_q = products.sum(2)
        R_k = products.sum(1)
    R_x = torch.zeros_like(x)
    for name, R in (("q", R_q), ("k", R_k), ("v", R_v)):
        R_x += lin(x, p[name], R.transpose(0, 1).reshape(N, D), eps, gamma)
    return out, R_x, leak


def lrp_reference(model, inputs_row, target, rule, read_at="embeddings_output", eps=0.0, gamma=0.0):
    """Relevance [N] of ONE unpadded sample and the relevance lost in AttnLRP's softmax (a float).

    Returns ``(relevance, logit, softmax_leak)``.
    """
    model = copy.deepcopy(model).double().eval()
    family = {"Bert": "bert", "Roberta": "roberta", "DistilBert": "distilbert", "ViT": "vit", "DeiT": "deit"}[
        type(model).__name__.split("For")[0]
    ]
    base, layers, pre_ln, final_ln, head = _spec(model, family)
    heads = model.config.num_attention_heads if family != "distilbert" else model.config.n_heads
    inputs_row = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs_row.items()}
    seen = {}
    hooks = [base.embeddings.register_forward_hook(lambda m, a, o: seen.__setitem__("emb", o))]
    hooks.append(model.get_input_embeddings().register_forward_hook(lambda m, a, o: seen.__setitem__("word", o)))
    if family in TEXT:
        ln = base.embeddings.LayerNorm
        hooks.append(ln.register_forward_hook(lambda m, a, o: seen.__setitem__("sum", a[0])))
    with torch.no_grad():
        hf_logits = model(**inputs_row).logits[0]
        for handle in hooks:
            handle.remove()
        h = seen["emb"][0]
        # ---- forward, keeping every activation
        acts = []
        for p in layers:
            if pre_ln:
                n1, _ = layer_norm(h, p["ln1"])
                a, _, _ = _attention(p, n1, heads, rule, None, eps, gamma)
                r1 = a + h
                n2, _ = layer_norm(r1, p["ln2"])
                i = n2 @ p["fc1"].weight.T + p["fc1"].bias
                f = _act(family, i, "mlp") @ p["fc2"].weight.T + p["fc2"].bias
                acts.append(dict(h=h, n1=n1, a=a, r1=r1, n2=n2, i=i, g=_act(family, i, "mlp"), f=f))
                h = f + r1
            else:
                a, _, _ = _attention(p, h, heads, rule, None, eps, gamma)
                r1 = a + h
                h1, _ = layer_norm(r1, p["ln1"])
                i = h1 @ p["fc1"].weight.T + p["fc1"].bias
                g = _act(family, i, "mlp")
                f = g @ p["fc2"].weight.T + p["fc2"].bias
                r2 = f + h1
                acts.append(dict(h=h, a=a, r1=r1, h1=h1, i=i, g=g, f=f, r2=r2))
                h, _ = layer_norm(r2, p["ln2"])
        top = h
        normed = layer_norm(top, final_ln)[0] if final_ln is not None else top
        vectors = [normed[0]]
        for step in head:
            x = vectors[-1]
            vectors.append(_act(family, x, "head") if step == "act" else x @ step.weight.T + step.bias)
        logits = vectors[-1]
        assert torch.allclose(logits, hf_logits, atol=1e-9), "reference forward differs from the HF forward"
        c = int(logits.argmax()) if target is None else int(target)

        # ---- backward relevance
        R = torch.zeros_like(logits)
        R[c] = logits[c]
        for step, x in zip(reversed(head), reversed(vectors[:-1]), strict=True):
            R = R if step == "act" else lin(x, step, R, eps, gamma)
        R_top = torch.zeros_like(normed)
        R_top[0] = R
        if final_ln is not None:
            R_top = ln_rule(top, final_ln, R_top)
        R_h = R_top
        leak = 0.0
        for p, s in zip(reversed(layers), reversed(acts), strict=True):
            if pre_ln:
                R_f, R_r1 = add_rule(s["f"], s["r1"], R_h)
                R_i = lin(s["g"], p["fc2"], R_f, eps, gamma)  # identity rule: R_i = R_g
                R_n2 = lin(s["n2"], p["fc1"], R_i, eps, gamma)
                R_r1 = R_r1 + ln_rule(s["r1"], p["ln2"], R_n2)
                R_a, R_h = add_rule(s["a"], s["h"], R_r1)
                _, R_n1, layer_leak = _attention(p, s["n1"], heads, rule, R_a, eps, gamma)
                R_h = R_h + ln_rule(s["h"], p["ln1"], R_n1)
            else:
                R_r2 = ln_rule(s["r2"], p["ln2"], R_h)
                R_f, R_h1 = add_rule(s["f"], s["h1"], R_r2)
                R_i = lin(s["g"], p["fc2"], R_f, eps, gamma)
                R_h1 = R_h1 + lin(s["h1"], p["fc1"], R_i, eps, gamma)
                R_r1 = ln_rule(s["r1"], p["ln1"], R_h1)
                R_a, R_h = add_rule(s["a"], s["h"], R_r1)
                _, R_x, layer_leak = _attention(p, s["h"], heads, rule, R_a, eps, gamma)
                R_h = R_h + R_x
            leak += layer_leak
        if read_at == "embeddings_output":
            return R_h.sum(-1).float(), float(logits[c]), leak
        emb = seen["emb"][0]
        if family in TEXT:  # e = word + position (+ type), then the embedding LayerNorm
            total = seen["sum"][0]
            R_sum = ln_rule(total, base.embeddings.LayerNorm, R_h)
            return (seen["word"][0] * _div(R_sum, total)).sum(-1).float(), float(logits[c]), leak
        patches = seen["word"][0]  # e[prefix:] = patch + position; prefix tokens get 0
        prefix = emb.shape[0] - patches.shape[0]
        R_patch = (patches * _div(R_h[prefix:], emb[prefix:])).sum(-1)
        return torch.cat([torch.zeros(prefix, dtype=R_patch.dtype), R_patch]).float(), float(logits[c]), leak
