"""explain() with only own-pass methods takes logits and target from LRP's pass: no shared forward (issue 14).

Registry loop over every family with LRP rules and both methods: the maps, masks, target and logits equal those of
the shared-pass route (forced by making ``may_skip_shared_pass`` say no), with one model forward instead of two.
"""

import pytest
import torch
from helpers import CAUSAL_LMS, REGISTERED_FAMILIES, make_inputs, make_model, modality_for

import lightning_xai.explanation_pass as explanation_pass
from lightning_xai import explain
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers import AttnLRP, ConservativeLRP, Random
from lightning_xai.explainers.lrp import lrp_attention
from lightning_xai.families import explainable_model, resolve_family

LRP_FAMILIES = [
    family for family in REGISTERED_FAMILIES
    if "lrp_rules" not in resolve_family(explainable_model(make_model(family))).missing_capabilities()
]


def counted_explain(model, inputs, methods, modality, **options):
    """explain() and the number of forwards the model ran in it."""
    forwards = []
    handle = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        maps = explain(model, inputs, methods, modality=modality, **options)
    finally:
        handle.remove()
    return maps, len(forwards)


@pytest.mark.parametrize("method", [ConservativeLRP, AttnLRP])
@pytest.mark.parametrize("family", LRP_FAMILIES)
def test_an_lrp_only_call_equals_the_shared_pass_route_with_one_forward(family, method, monkeypatch):
    model = explainable_model(make_model(family))
    inputs, modality = make_inputs(family), modality_for(family)
    led, led_forwards = counted_explain(model, inputs, [method(), Random()], modality)
    monkeypatch.setattr(explanation_pass, "may_skip_shared_pass", lambda explainers: False)
    shared, shared_forwards = counted_explain(model, inputs, [method(), Random()], modality)
    # a causal LM's LRP explains other logits than its scorer's, and Swin's LRP runs the eager attention where the
    # model is configured with sdpa (its windows cannot use plain sdpa): both keep the shared pass
    keeps_shared_pass = family in CAUSAL_LMS or family == "swin"
    assert (led_forwards, shared_forwards) == ((2, 2) if keeps_shared_pass else (1, 2))
    for name in (method.name, "random"):
        a, b = led[name], shared[name]
        assert torch.equal(a.relevance, b.relevance), name
        assert torch.equal(a.valid_mask, b.valid_mask) and torch.equal(a.special_mask, b.special_mask)
        assert torch.equal(a.target, b.target)
        assert torch.equal(a.logits, b.logits)  # LRP's forward on the model's own attention: the model's logits


def test_the_leading_pass_resolves_label_and_fixed_targets():
    model, inputs, modality = make_model("bert", num_labels=3), make_inputs("bert"), modality_for("bert")
    labels = torch.tensor([2, 0, 1, 2])
    for target, expected in (("label", labels), (1, torch.ones(4, dtype=torch.long))):
        maps, forwards = counted_explain(model, inputs, [AttnLRP()], modality, target=target, labels=labels)
        assert forwards == 1 and torch.equal(maps["attn_lrp"].target, expected)
    with pytest.raises(LightningXAIError, match="needs labels"):
        explain(model, inputs, [AttnLRP()], modality=modality, target="label")


def test_forced_attention_keeps_the_shared_pass():
    """attention='eager' on a model configured with sdpa: its logits may differ in the last bits, so no lead."""
    model, inputs, modality = make_model("bert"), make_inputs("bert"), modality_for("bert")
    _, forwards = counted_explain(model, inputs, [AttnLRP(attention="eager")], modality)
    assert forwards == 2


def test_a_failing_leader_is_recorded_and_the_others_still_run():
    class Failing(ConservativeLRP):
        def explain_and_predict(self, *args):
            raise RuntimeError("injected")

    model, inputs, modality = make_model("bert"), make_inputs("bert"), modality_for("bert")
    errors: dict[str, BaseException] = {}
    maps, forwards = counted_explain(model, inputs, [Failing(), AttnLRP()], modality, errors=errors)
    assert list(errors) == ["cp_lrp"] and list(maps) == ["attn_lrp"] and forwards == 1
    with pytest.raises(RuntimeError, match="injected"):
        explain(model, inputs, [Failing()], modality=modality)


def test_auto_attention_follows_the_model_and_its_family():
    bert = make_model("bert")
    assert lrp_attention(bert) == "sdpa"
    bert.set_attn_implementation("eager")
    assert lrp_attention(bert) == "eager"  # the user chose the eager attention: LRP keeps it
    swin = make_model("swin")  # windows: its family cannot run its attention through plain sdpa
    assert lrp_attention(swin) == "eager"


def test_lrp_refuses_forced_sdpa_where_the_family_cannot_run_it():
    from lightning_xai.errors import UnsupportedMethodError

    swin = make_model("swin")
    with pytest.raises(UnsupportedMethodError, match="attention='sdpa' cannot run on a Swin"):
        lrp_attention(swin, "sdpa")


def test_an_attention_outside_the_interface_is_refused_not_explained_without_its_rule(monkeypatch):
    """If no attention layer runs LRP's attention function, the q, k, v rules are missing: an error, not a map."""
    import lightning_xai.explainers.lrp as lrp_module

    model, inputs = make_model("bert"), make_inputs("bert")
    monkeypatch.setitem(lrp_module._IMPLEMENTATIONS, ("attn_lrp", "sdpa"), "sdpa")  # the plain sdpa: no rule
    with pytest.raises(LightningXAIError, match="ran LRP's attention rule"):
        lrp_module.lrp(model, inputs, 0, rule="attn_lrp")


def test_a_model_set_to_eager_is_led_by_the_eager_pass():
    """"auto" keeps a model's eager attention, and that pass's logits are then the model's: it still leads."""
    model, inputs, modality = make_model("bert"), make_inputs("bert"), modality_for("bert")
    model.set_attn_implementation("eager")
    led, forwards = counted_explain(model, inputs, [AttnLRP()], modality)
    with torch.no_grad():
        plain = model.eval()(**inputs).logits
    assert forwards == 1 and torch.equal(led["attn_lrp"].logits, plain)
    assert model.config._attn_implementation == "eager"


def test_the_leading_pass_under_inference_mode_equals_the_one_outside():
    """Lightning validates under inference_mode: the leading pass still differentiates, with the same maps."""
    model, inputs, modality = make_model("llama"), make_inputs("llama"), modality_for("llama")
    outside = explain(model, inputs, [AttnLRP()], modality=modality)["attn_lrp"]
    with torch.inference_mode():
        inside, forwards = counted_explain(model, inputs, [AttnLRP()], modality)
    assert forwards == 1 and torch.equal(inside["attn_lrp"].relevance, outside.relevance)
