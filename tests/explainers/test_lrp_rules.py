"""The LRP rules as custom autograd functions: each rule against its definition, the presets against the explicit
references with lxt's settings, sdpa against eager, and what the efficient pass does NOT do (surrogate graphs,
a linear rule that is the identity, a TorchFunctionMode around the transformer layers)."""

from contextlib import ExitStack

import pytest
import torch
from helpers import TEXT_FAMILIES, make_inputs, make_model, modality_for
from reference.attention import unpadded_row
from reference.lrp import lrp_reference
from reference.lrp_decoder import decoder_lrp_reference
from transformers.pytorch_utils import Conv1D

from lightning_xai import explain
from lightning_xai.explainers._lrp_rules import (
    IDENTITY_EPSILON,
    IdentityRule,
    LayerNormRule,
    LinearRule,
    PassBuffers,
    ScaleGradient,
    layer_norm_rule,
)
from lightning_xai.explainers.lrp import AttnLRP, ConservativeLRP, lrp, lrp_rules

PRESETS = {"cp_lrp": ConservativeLRP, "attn_lrp": AttnLRP}


def _surrogate(value, differentiable):
    """The previous implementation's building block: ``value`` forward, gradient of ``differentiable``."""
    return value.detach() + (differentiable - differentiable.detach())


def _stab(z, eps):
    return z + torch.where(z >= 0, eps, -eps)


# ------------------------------------------------------------------------------------------------ each rule


@pytest.mark.parametrize("epsilon,gamma", [(1e-6, 0.0), (0.1, 0.0), (0.0, 0.25), (1e-6, 0.25)])
@pytest.mark.parametrize("kind", ["linear", "conv1d_hf", "conv2d"])
def test_linear_rule_equals_the_surrogate_definition(kind, epsilon, gamma):
    """dx = W_g^T (dz * z / stab(z_g)), as the forward-value-preserving surrogate z_g * (z / stab(z_g)).detach()."""
    torch.manual_seed(0)
    if kind == "linear":
        module, x = torch.nn.Linear(6, 5), torch.randn(3, 4, 6)
    elif kind == "conv1d_hf":
        module, x = Conv1D(5, 6), torch.randn(3, 4, 6)  # GPT-2: weight [in, out]
    else:
        module, x = torch.nn.Conv2d(3, 4, 2, stride=2), torch.randn(2, 3, 6, 6)
    x.requires_grad_()
    z = module(x)
    out = LinearRule.apply(x, z.detach(), module, epsilon, gamma, PassBuffers())
    assert torch.equal(out, z)
    delta = torch.randn_like(z)
    (got,) = torch.autograd.grad(out, x, delta)

    weight, bias = module.weight.detach(), module.bias.detach()
    weight_g, bias_g = weight + gamma * weight.clamp_min(0), bias + gamma * bias.clamp_min(0)
    if kind == "linear":
        z_g = torch.nn.functional.linear(x, weight_g, bias_g)
    elif kind == "conv1d_hf":
        z_g = x @ weight_g + bias_g
    else:
        z_g = torch.nn.functional.conv2d(x, weight_g, bias_g, stride=2)
    expected_out = _surrogate(z, z_g * (z / _stab(z_g.detach(), max(epsilon, 1e-12))).detach())
    (expected,) = torch.autograd.grad(expected_out, x, delta)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert module.weight.grad is None and module.bias.grad is None


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_rule_is_layer_norm_with_sigma_constant(affine):
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(8, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    x = torch.randn(3, 5, 8, requires_grad=True)
    y = norm(x)
    out = LayerNormRule.apply(x, norm, torch.zeros_like(x))
    assert torch.equal(out, y)  # LayerNorm's own kernel: the same value bit for bit
    delta = torch.randn_like(y)
    (got,) = torch.autograd.grad(out, x, delta)
    sigma = torch.sqrt(x.detach().var(-1, unbiased=False, keepdim=True) + norm.eps)
    expected_y = (x - x.mean(-1, keepdim=True)) / sigma
    if affine:
        expected_y = expected_y * norm.weight.detach() + norm.bias.detach()
    (expected,) = torch.autograd.grad(expected_y, x, delta)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_layer_norm_subclass_with_its_own_forward_keeps_its_value_and_gets_the_rule():
    class ShiftedNorm(torch.nn.LayerNorm):
        def forward(self, x):
            return super().forward(x) + 1.0  # a value nn.LayerNorm's kernel would not give

    norm = ShiftedNorm(4)
    x = torch.randn(2, 4, requires_grad=True)
    with ExitStack() as stack:
        layer_norm_rule(norm, PassBuffers(), stack)
        out = norm(x)
        (got,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert torch.equal(out, torch.nn.LayerNorm.forward(norm, x) + 1.0)
    assert torch.allclose(got, torch.zeros_like(got), atol=1e-6)  # w dy - mean(w dy) = 0 for w = dy = 1
    assert not norm._forward_hooks and "forward" not in vars(norm)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_half_and_double_precision_models(family, dtype):
    """Rule ratios in float32 (float64 for float64): finite maps close to the float32 model's, every setting."""
    inputs = make_inputs(family, batch=2)
    reference = lrp(make_model(family, num_labels=3), inputs, 1, rule="attn_lrp", epsilon=1e-6)
    model = make_model(family, num_labels=3).to(dtype)
    for settings in ({"rule": "attn_lrp", "epsilon": 1e-6}, {"rule": "cp_lrp", "gamma": 0.1}):
        relevance = lrp(model, inputs, 1, **settings)
        assert relevance.dtype == torch.float32 and torch.isfinite(relevance).all()
    tolerance = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float64: 1e-5}[dtype]
    error = (lrp(model, inputs, 1, rule="attn_lrp", epsilon=1e-6) - reference).abs().max()
    assert error <= tolerance * reference.abs().max()


def test_identity_rule_and_scale_gradient():
    x = torch.tensor([-2.0, -1e-12, 0.0, 1e-12, 0.5, 3.0], requires_grad=True)
    y = torch.nn.functional.gelu(x)
    out = IdentityRule.apply(x, y.detach())
    delta = torch.arange(1.0, 7.0)
    (got,) = torch.autograd.grad(out, x, delta)
    expected = delta * y.detach() / _stab(x.detach(), IDENTITY_EPSILON)
    assert torch.equal(out, y) and torch.allclose(got, expected) and torch.isfinite(got).all()
    (scaled,) = torch.autograd.grad(ScaleGradient.apply(x, 0.25), x, delta)
    assert torch.equal(scaled, delta / 4)


# ------------------------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
@pytest.mark.parametrize("family", [*TEXT_FAMILIES, "vit", "deit"])
def test_lxt_preset_equals_the_explicit_reference_with_lxt_settings(family, method):
    """``.lxt()``: read at the word/patch embeddings, epsilon 0: the explicit float64 reference with those settings."""
    preset = PRESETS[method].lxt()
    assert (preset.read_at, preset.epsilon, preset.gamma) == ("word_embeddings", 0.0, 0.0)
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=3)
    maps = explain(model, inputs, [preset], modality=modality_for(family))[method]
    for row in range(3):
        single = unpadded_row(inputs, row)
        expected, _, _ = lrp_reference(model, single, int(maps.target[row]), method, "word_embeddings", eps=0.0)
        scale = float(expected.abs().max())
        torch.testing.assert_close(maps.relevance[row, : expected.shape[0]], expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
def test_lxt_preset_on_a_llama_equals_the_decoder_reference_at_epsilon_zero(method):
    model = make_model("llama", num_labels=3)
    inputs = make_inputs("llama", batch=3)
    maps = explain(model, inputs, [PRESETS[method].lxt()], modality=modality_for("llama"))[method]
    for row in range(3):
        single = unpadded_row(inputs, row)
        expected, _ = decoder_lrp_reference(model, single["input_ids"], int(maps.target[row]), method, eps=0.0)
        scale = float(expected.abs().max())
        torch.testing.assert_close(maps.relevance[row, : expected.shape[0]], expected, rtol=1e-3, atol=1e-3 * scale)


def test_presets_and_defaults_differ_where_documented():
    assert (ConservativeLRP().read_at, ConservativeLRP().epsilon) == ("embeddings_output", 0.0)
    assert (AttnLRP().read_at, AttnLRP().epsilon) == ("embeddings_output", 1e-6)
    assert ConservativeLRP.lxt(attention="sdpa").attention == "sdpa"
    with pytest.raises(ValueError, match="attention"):
        AttnLRP(attention="flash")


# ------------------------------------------------------------------------------------------------ sdpa


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
@pytest.mark.parametrize("family", ["bert", "roberta", "vit", "llama", "gpt2"])
def test_sdpa_attention_gives_the_eager_maps(family, method):
    """The rules act on q, k, v before the attention function: sdpa or eager, the same relevance up to rounding."""
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=3)
    eager = lrp(model, inputs, 1, rule=method, epsilon=1e-6)
    sdpa = lrp(model, inputs, 1, rule=method, epsilon=1e-6, attention="sdpa")
    scale = float(eager.abs().max())
    torch.testing.assert_close(sdpa, eager, rtol=1e-4, atol=1e-5 * scale)
    assert model.config._attn_implementation == "sdpa"


# ------------------------------------------------------------------------------------------------ what is not done


def _graph_nodes(tensor):
    """Names of every autograd node reachable from ``tensor``."""
    seen, pending, names = set(), [tensor.grad_fn], []
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        pending.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
def test_one_rule_node_per_module_and_no_linear_rule_when_it_is_the_identity(method):
    """epsilon = gamma = 0 leaves linear layers on their own gradient (LRP-0); epsilon > 0 replaces every one."""
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert", batch=2)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    for epsilon in (0.0, 1e-6):
        leaf = model.bert.embeddings(input_ids=inputs["input_ids"]).detach().requires_grad_()
        with torch.enable_grad(), lrp_rules(model, method, epsilon=epsilon):
            logits = model(inputs_embeds=leaf, attention_mask=inputs["attention_mask"]).logits
        nodes = _graph_nodes(logits)
        # BERT embeds inputs_embeds with positions and its LayerNorm again: every LayerNorm and linear layer runs
        assert nodes.count("LayerNormRuleBackward") == norms
        assert "NativeLayerNormBackward0" not in nodes
        reached = linears - (2 * model.config.num_hidden_layers if method == "cp_lrp" else 0)  # AH: q, k cut off
        if epsilon == 0:
            assert "LinearRuleBackward" not in nodes and nodes.count("AddmmBackward0") == reached
        else:
            assert nodes.count("LinearRuleBackward") == reached and "AddmmBackward0" not in nodes
        assert "GeluBackward0" not in nodes and "TanhBackward0" not in nodes  # identity rule on both


def test_torch_function_mode_only_inside_the_modules_the_family_marks():
    """RoBERTa's head calls torch.tanh: the identity rule reaches it, but the encoder layers run without the mode."""
    model = make_model("roberta", num_labels=3)
    inputs = make_inputs("roberta", batch=2)
    seen = {}

    def probe(name):
        def hook(_module, _args):
            seen.setdefault(name, set()).add(torch._C._is_torch_function_mode_enabled())

        return hook

    handles = [model.roberta.encoder.layer[0].register_forward_pre_hook(probe("layer")),
               model.classifier.out_proj.register_forward_pre_hook(probe("head"))]
    try:
        for method in ("cp_lrp", "attn_lrp"):
            with torch.enable_grad(), lrp_rules(model, method):
                logits = model(**inputs).logits
            assert "TanhBackward0" not in _graph_nodes(logits)
        with torch.enable_grad(), lrp_rules(model, "cp_lrp", activation_rule="gradient"):
            assert "TanhBackward0" in _graph_nodes(model(**inputs).logits)  # the plain derivative
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {"layer": {False}, "head": {True, False}}
    assert "forward" not in vars(model.classifier) and not torch._C._is_torch_function_mode_enabled()
