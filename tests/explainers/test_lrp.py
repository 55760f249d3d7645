import copy

import pytest
import torch
from helpers import (
    FAMILIES,
    TEXT_FAMILIES,
    assert_same_snapshot,
    make_inputs,
    make_model,
    modality_for,
    model_snapshot,
)
from reference.lrp import lrp_reference

from lightning_xai import explain
from lightning_xai.explainers.lrp import AttnLRP, ConservativeLRP, attn_lrp, cp_lrp, lrp, lrp_rules
from lightning_xai.modalities import select

METHODS = {"cp_lrp": ConservativeLRP, "attn_lrp": AttnLRP}


def _unpadded_row(inputs, row):
    single = select(inputs, slice(row, row + 1))
    if "attention_mask" in single:
        length = int(single["attention_mask"].sum())
        single = {k: v[:, :length] for k, v in single.items()}
    return single


def _zero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


def _assert_matches_reference(got, expected, rel):
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_single_backward_equals_explicit_layerwise_reference(family, method):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=3)
    explainer = METHODS[method]()
    maps = explain(model, inputs, [explainer], modality=modality_for(family))[method]
    assert maps.relevance.dtype == torch.float32 and maps.signed
    for row in range(3):
        single = _unpadded_row(inputs, row)
        expected, _, _ = lrp_reference(model, single, int(maps.target[row]), method, eps=explainer.epsilon)
        n = expected.shape[0]
        _assert_matches_reference(maps.relevance[row, :n], expected, 1e-5)
        assert torch.all(maps.relevance[row, n:] == 0)


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
@pytest.mark.parametrize("family", ["bert", "vit", "deit"])
def test_word_embedding_reading_point_epsilon_and_gamma_match_reference(family, method):
    model = make_model(family)
    inputs = make_inputs(family, batch=2)
    got = lrp(model, inputs, 1, rule=method, read_at="word_embeddings", epsilon=1e-6, gamma=0.25)
    for row in range(2):
        single = _unpadded_row(inputs, row)
        expected, _, _ = lrp_reference(model, single, 1, method, "word_embeddings", eps=1e-6, gamma=0.25)
        _assert_matches_reference(got[row, : expected.shape[0]], expected, 1e-3)
    if family != "bert":  # prefix tokens ([CLS], distillation) get 0 at the patch embeddings
        assert torch.all(got[:, : 1 if family == "vit" else 2] == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_cp_lrp_is_conservative_without_biases(family):
    """Zero biases, read at the embedding output: sum_t R_t == logit_c (|error| <= 1e-5 relative + 1e-8)."""
    model = _zero_biases(make_model(family))
    inputs = make_inputs(family)
    with torch.no_grad():
        logits = model(**inputs).logits
    relevance = cp_lrp(model, inputs, 0)
    torch.testing.assert_close(relevance.sum(1), logits[:, 0], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_cp_lrp_conservative_at_word_embeddings_when_position_and_type_embeddings_are_zero(family):
    model = _zero_biases(make_model(family))
    embeddings = model.base_model.embeddings
    with torch.no_grad():
        for name in ("position_embeddings", "token_type_embeddings"):
            if hasattr(embeddings, name):
                getattr(embeddings, name).weight.zero_()
    inputs = make_inputs(family)
    with torch.no_grad():
        logits = model(**inputs).logits
    relevance = cp_lrp(model, inputs, 1, read_at="word_embeddings")
    torch.testing.assert_close(relevance.sum(1), logits[:, 1], rtol=1e-5, atol=1e-8)
    with_positions = cp_lrp(make_model(family), inputs, 1, read_at="word_embeddings")
    with torch.no_grad():
        full_logits = make_model(family)(**inputs).logits[:, 1]
    assert not torch.allclose(with_positions.sum(1), full_logits, rtol=1e-3, atol=0)  # position/type/bias absorb


@pytest.mark.parametrize("family", ["bert", "vit", "distilbert"])
def test_attn_lrp_conserves_up_to_the_softmax_rule(family):
    """Zero biases, epsilon 0: sum_t R_t == logit_c - (relevance absorbed by Prop. 3.1's softmax rule)."""
    model = _zero_biases(make_model(family))
    inputs = make_inputs(family, batch=2)
    relevance = attn_lrp(model, inputs, 0, epsilon=0.0)
    for row in range(2):
        reference, logit, leak = lrp_reference(model, _unpadded_row(inputs, row), 0, "attn_lrp")
        assert abs(float(reference.sum()) + leak - logit) <= 1e-6 * abs(logit)  # the explicit bookkeeping
        assert abs(float(relevance[row].sum()) - (logit - leak)) <= 1e-5 * abs(logit) + 1e-8
        assert leak != 0.0


def test_padding_is_zero_and_batched_equals_per_sample_loop():
    model = make_model("roberta")
    inputs = make_inputs("roberta", batch=4)
    modality = modality_for("roberta")
    for explainer in (ConservativeLRP(), AttnLRP()):
        batched = explain(model, inputs, [explainer], modality=modality)[explainer.name]
        padding = inputs["attention_mask"] == 0
        assert padding.any() and torch.all(batched.relevance[padding] == 0)
        for row in range(4):
            single = _unpadded_row(inputs, row)
            alone = explain(model, single, [explainer], modality=modality)[explainer.name].relevance[0]
            torch.testing.assert_close(batched.relevance[row, : alone.shape[0]], alone, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("family", ["bert", "distilbert", "vit"])
def test_model_restored_in_train_mode_with_existing_grads(family):
    model = make_model(family).train()
    model(**make_inputs(family, seed=2)).logits.sum().backward()
    model.base_model.embeddings.dropout.eval()  # a deliberately frozen sub-module keeps its mode
    inputs = make_inputs(family)
    model.eval()
    with torch.no_grad():
        sdpa_before = model(**inputs).logits
    model.train()
    model.base_model.embeddings.dropout.eval()
    before = model_snapshot(model)
    layer_norm_forward = torch.nn.LayerNorm.forward
    explain(model, inputs, [ConservativeLRP(gamma=0.1), AttnLRP(gamma=0.1)], modality=modality_for(family))
    assert_same_snapshot(before, model_snapshot(model))
    assert torch.nn.LayerNorm.forward is layer_norm_forward
    assert not torch._C._is_torch_function_mode_enabled()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, sdpa_before)  # the regular sdpa forward, bit for bit


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
def test_model_restored_when_an_exception_is_raised_mid_pass(method):
    model = make_model("bert").train()
    model(**make_inputs("bert")).logits.sum().backward()
    layer = model.bert.encoder.layer[1]

    def boom(module, args, output):
        if "lrp" in model.config._attn_implementation:  # only inside the patched pass
            raise RuntimeError("injected")

    handle = layer.register_forward_hook(boom)
    try:
        before = model_snapshot(model)
        with pytest.raises(RuntimeError, match="injected"):
            explain(model, make_inputs("bert"), [METHODS[method]()], modality=modality_for("bert"))
        assert_same_snapshot(before, model_snapshot(model))
        assert not torch._C._is_torch_function_mode_enabled()
    finally:
        handle.remove()


def test_gamma_changes_the_map_but_not_the_forward_value():
    model = make_model("vit")
    inputs = make_inputs("vit")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        own, plain_eager = model(**inputs).logits, eager(**inputs).logits
    for rule in ("cp_lrp", "attn_lrp"):
        # "auto" runs the model's own (sdpa) attention, "eager" its eager function: each forward bit for bit
        for attention, plain in (("auto", own), ("eager", plain_eager)):
            with torch.enable_grad(), lrp_rules(model, rule, gamma=0.5, epsilon=1e-6, attention=attention):
                patched = model(**inputs).logits
            assert torch.equal(patched, plain), attention
        assert not torch.allclose(lrp(model, inputs, 0, rule=rule, gamma=0.5), lrp(model, inputs, 0, rule=rule))


def test_frozen_model_and_inference_mode():
    model = make_model("distilbert")
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        maps = explain(model, make_inputs("distilbert"), [AttnLRP(), ConservativeLRP()],
                       modality=modality_for("distilbert"))
    assert (maps["attn_lrp"].relevance != 0).any() and (maps["cp_lrp"].relevance != 0).any()
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_cp_and_attn_lrp_differ_and_activation_rule_option():
    model = make_model("bert")
    inputs = make_inputs("bert")
    cp, attn = lrp(model, inputs, 0, rule="cp_lrp"), lrp(model, inputs, 0, rule="attn_lrp")
    assert not torch.allclose(cp, attn)
    gradient_rule = cp_lrp(model, inputs, 0, activation_rule="gradient")
    assert not torch.allclose(cp, gradient_rule)


def test_class_attributes_and_bad_arguments():
    assert ConservativeLRP.name == "cp_lrp" and AttnLRP.name == "attn_lrp"
    assert ConservativeLRP.signed and AttnLRP.signed
    assert ConservativeLRP.needs == AttnLRP.needs == frozenset({"own_pass", "lrp_rules"})
    with pytest.raises(ValueError, match="read_at"):
        AttnLRP(read_at="pixels")
    with pytest.raises(ValueError, match="gamma"):
        ConservativeLRP(gamma=-1)
    with pytest.raises(ValueError, match="activation_rule"):
        ConservativeLRP(activation_rule="zero")
    with pytest.raises(ValueError, match="rule"):
        lrp(make_model("bert"), make_inputs("bert"), 0, rule="lrp0")
