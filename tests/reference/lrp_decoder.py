"""CP-LRP and AttnLRP on decoders written out by hand: Llama (RMSNorm, RoPE, GQA, gated MLP) and GPT-2.

Independent of lightning_xai's hooks and of autograd: the forward is recomputed in float64 from the weights of ONE
unpadded sample (checked against the HF logits), then relevance is propagated backwards with the explicit rules of
``reference/lrp.py`` plus the decoder ones (Achtibat et al. 2024; lxt's ``efficient/models/llama.py``, ``gpt2.py``):

* RMSNorm with its normalisation a constant (identity rule): ``y = x * c`` elementwise, so ``R_x = R_y``;
* gated MLP ``down(act(gate(x)) * up(x))``: AttnLRP splits the product's relevance in halves (uniform rule) and
  passes the half of ``act`` unchanged (identity rule); CP-LRP keeps the gate constant (all of it to ``up``);
* rotary embedding: LRP-0 through the rotation ``q_rot = q cos + rotate_half(q) sin`` (a linear map of ``q``);
* grouped-query attention: the relevance of a repeated key/value head is the sum over the query heads it serves;
* causal attention: the scores of masked pairs take no relevance.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from reference.lrp import _div, add_rule, layer_norm, lin, ln_rule


def _rms(x, module):
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * module.weight


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rotate_half_transposed(x):
    half = x.shape[-1] // 2
    return torch.cat([x[..., half:], -x[..., :half]], dim=-1)


def _causal_attention(q, k, v, scaling, rule, R_ctx=None):
    """q [H, N, d], k/v [H, N, d] (already repeated): output [H, N, d] and, with R_ctx, (R_q, R_k, R_v)."""
    N = q.shape[1]
    allowed = torch.ones(N, N, dtype=torch.bool).tril()
    S_raw = q @ k.transpose(1, 2)
    S = S_raw * scaling
    A = torch.softmax(S.masked_fill(~allowed, float("-inf")), dim=-1)
    out = A @ v
    if R_ctx is None:
        return out, None
    share = 1.0 if rule == "cp_lrp" else 0.5
    products = torch.einsum("hji,hip->hjip", A, v) * _div(R_ctx, out)[:, :, None, :] * share
    R_v = products.sum(1)
    R_A = products.sum(-1)
    if rule == "cp_lrp":  # AH-rule: no relevance to queries and keys
        return out, (torch.zeros_like(q), torch.zeros_like(k), R_v)
    S = torch.where(allowed, S, torch.zeros_like(S))
    R_S = S * (R_A - A * R_A.sum(-1, keepdim=True))  # Prop. 3.1 (masked pairs: A = 0, R_A = 0, S := 0)
    qk = torch.einsum("hjd,hid->hjid", q, k) * _div(R_S, 2 * torch.where(allowed, S_raw, torch.ones_like(S_raw)))[
        ..., None
    ] * allowed[None, :, :, None]
    return out, (qk.sum(2), qk.sum(1), R_v)


def _rotary_lrp(q, cos, sin, R_rot):
    """LRP-0 through q_rot = q cos + rotate_half(q) sin (per position, per head): R_q = q * M^T (R_rot / q_rot)."""
    q_rot = q * cos + _rotate_half(q) * sin
    z = _div(R_rot, q_rot)
    return q * (z * cos + _rotate_half_transposed(z * sin))


def _llama(model, ids, target, rule, eps):
    base = model.model
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dh = getattr(config, "head_dim", None) or config.hidden_size // heads
    N = ids.shape[1]
    x = base.embed_tokens(ids)[0]
    position_ids = torch.arange(N)[None]
    cos, sin = base.rotary_emb(x[None], position_ids)
    cos, sin = cos[0][None], sin[0][None]  # [1, N, d]
    acts = []
    for layer in base.layers:
        att, mlp = layer.self_attn, layer.mlp
        n1 = _rms(x, layer.input_layernorm)
        q = (n1 @ att.q_proj.weight.T).reshape(N, heads, dh).transpose(0, 1)
        k = (n1 @ att.k_proj.weight.T).reshape(N, kv_heads, dh).transpose(0, 1)
        v = (n1 @ att.v_proj.weight.T).reshape(N, kv_heads, dh).transpose(0, 1)
        q_rot, k_rot = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        group = heads // kv_heads
        k_rep, v_rep = k_rot.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        heads_out, _ = _causal_attention(q_rot, k_rep, v_rep, dh**-0.5, rule)
        ctx = heads_out.transpose(0, 1).reshape(N, heads * dh)
        out = ctx @ att.o_proj.weight.T
        h = x + out
        n2 = _rms(h, layer.post_attention_layernorm)
        gate = n2 @ mlp.gate_proj.weight.T
        act = torch.nn.functional.silu(gate)
        up = n2 @ mlp.up_proj.weight.T
        product = act * up
        f = product @ mlp.down_proj.weight.T
        acts.append(dict(x=x, n1=n1, q=q, k=k, v=v, q_rot=q_rot, k_rep=k_rep, v_rep=v_rep, ctx=ctx, out=out, h=h,
                         n2=n2, act=act, up=up, product=product, f=f))
        x = h + f
    top = x
    normed = _rms(top, base.norm)
    logits = normed[-1] @ model.score.weight.T
    c = int(logits.argmax()) if target is None else int(target)
    R = torch.zeros_like(logits)
    R[c] = logits[c]
    R_top = torch.zeros_like(top)
    R_top[-1] = lin(normed[-1], model.score, R, eps)  # RMSNorm: identity rule
    R_x = R_top
    for layer, s in zip(reversed(base.layers), reversed(acts), strict=True):
        att, mlp = layer.self_attn, layer.mlp
        R_f, R_h = add_rule(s["f"], s["h"], R_x)
        R_product = lin(s["product"], mlp.down_proj, R_f, eps)
        if rule == "attn_lrp":  # uniform rule on the product, identity rule on the activation
            R_gate, R_up = R_product / 2, R_product / 2
        else:  # CP-LRP: the gate is a constant
            R_gate, R_up = torch.zeros_like(R_product), R_product
        R_n2 = lin(s["n2"], mlp.gate_proj, R_gate, eps) + lin(s["n2"], mlp.up_proj, R_up, eps)
        R_h = R_h + R_n2  # RMSNorm: identity rule
        R_out, R_x = add_rule(s["out"], s["x"], R_h)
        R_ctx = lin(s["ctx"], att.o_proj, R_out, eps).reshape(N, heads, dh).transpose(0, 1)
        _, (R_qrot, R_krep, R_vrep) = _causal_attention(s["q_rot"], s["k_rep"], s["v_rep"], dh**-0.5, rule, R_ctx)
        group = heads // kv_heads
        R_krot = R_krep.reshape(kv_heads, group, N, dh).sum(1)
        R_v = R_vrep.reshape(kv_heads, group, N, dh).sum(1)
        R_q = _rotary_lrp(s["q"], cos, sin, R_qrot)
        R_k = _rotary_lrp(s["k"], cos, sin, R_krot)
        R_n1 = (lin(s["n1"], att.q_proj, R_q.transpose(0, 1).reshape(N, -1), eps)
                + lin(s["n1"], att.k_proj, R_k.transpose(0, 1).reshape(N, -1), eps)
                + lin(s["n1"], att.v_proj, R_v.transpose(0, 1).reshape(N, -1), eps))
        R_x = R_x + R_n1  # RMSNorm: identity rule
    return R_x.sum(-1), logits


def _conv1d(module):
    """HF's Conv1D (``x W + b``, weight [in, out]) as the ``lin`` rule's ``x W^T + b``."""
    return SimpleNamespace(weight=module.weight.T, bias=module.bias)


def _gpt2(model, ids, target, rule, eps):
    base = model.transformer
    heads = model.config.n_head
    N, D = ids.shape[1], model.config.n_embd
    dh = D // heads
    x = base.wte(ids)[0] + base.wpe(torch.arange(N))
    acts = []
    for block in base.h:
        n1, _ = layer_norm(x, block.ln_1)
        qkv = n1 @ block.attn.c_attn.weight + block.attn.c_attn.bias
        q, k, v = (t.reshape(N, heads, dh).transpose(0, 1) for t in qkv.split(D, dim=-1))
        heads_out, _ = _causal_attention(q, k, v, dh**-0.5, rule)
        ctx = heads_out.transpose(0, 1).reshape(N, D)
        out = ctx @ block.attn.c_proj.weight + block.attn.c_proj.bias
        h = x + out
        n2, _ = layer_norm(h, block.ln_2)
        i = n2 @ block.mlp.c_fc.weight + block.mlp.c_fc.bias
        g = block.mlp.act(i)
        f = g @ block.mlp.c_proj.weight + block.mlp.c_proj.bias
        acts.append(dict(x=x, n1=n1, q=q, k=k, v=v, ctx=ctx, out=out, h=h, n2=n2, g=g, f=f))
        x = h + f
    top = x
    normed, _ = layer_norm(top, base.ln_f)
    logits = normed[-1] @ model.score.weight.T
    c = int(logits.argmax()) if target is None else int(target)
    R = torch.zeros_like(logits)
    R[c] = logits[c]
    R_normed = torch.zeros_like(top)
    R_normed[-1] = lin(normed[-1], model.score, R, eps)
    R_x = ln_rule(top, base.ln_f, R_normed)
    for block, s in zip(reversed(base.h), reversed(acts), strict=True):
        R_f, R_h = add_rule(s["f"], s["h"], R_x)
        R_i = lin(s["g"], _conv1d(block.mlp.c_proj), R_f, eps)  # identity rule on the activation: R_i = R_g
        R_h = R_h + ln_rule(s["h"], block.ln_2, lin(s["n2"], _conv1d(block.mlp.c_fc), R_i, eps))
        R_out, R_x = add_rule(s["out"], s["x"], R_h)
        R_ctx = lin(s["ctx"], _conv1d(block.attn.c_proj), R_out, eps).reshape(N, heads, dh).transpose(0, 1)
        _, (R_q, R_k, R_v) = _causal_attention(s["q"], s["k"], s["v"], dh**-0.5, rule, R_ctx)
        R_qkv = torch.cat([t.transpose(0, 1).reshape(N, D) for t in (R_q, R_k, R_v)], dim=-1)
        R_x = R_x + ln_rule(s["x"], block.ln_1, lin(s["n1"], _conv1d(block.attn.c_attn), R_qkv, eps))
    return R_x.sum(-1), logits


def decoder_lrp_reference(model, ids, target, rule, eps=0.0):
    """Relevance [N] at the input embeddings of ONE unpadded row ``ids`` [1, N] (Llama or GPT-2) and the logits."""
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        hf_logits = model(input_ids=ids).logits[0]
        relevance, logits = (_gpt2 if hasattr(model, "transformer") else _llama)(model, ids, target, rule, eps)
    assert torch.allclose(logits, hf_logits, atol=1e-9), "reference forward differs from the HF forward"
    return relevance.float(), logits
