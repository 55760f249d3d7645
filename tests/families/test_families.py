"""Model families: resolution, read-outs, prediction rows, LRP rule tables, modalities, refusals."""

import pytest
import torch
from helpers import ARCHITECTURES, REGISTERED_FAMILIES, make_inputs, make_model, make_tokenizer, modality_for
from reference.attention import (
    content_mask,
    eager_outputs,
    raw_attention_reference,
    rollout_reference,
    unpadded_row,
)
from reference.gae import gae_reference

from lightning_xai import explain
from lightning_xai.errors import LightningXAIError, UnsupportedMethodError, UnsupportedModelError
from lightning_xai.explainers import GAE, AttentionShapley, RawAttention, Rollout
from lightning_xai.explainers.lrp import cp_lrp
from lightning_xai.families import BertFamily, ViTFamily, resolve_family
from lightning_xai.modalities import TextModality, VisionModality

#: What each architecture declares it cannot provide (anything else missing is a bug).
EXPECTED_REFUSALS = {
    "gemma2": {"lrp_rules", "attention_outputs"},  # attention-logit soft-capping: no LRP rule (lxt none), no sdpa
    "modernbert": {"lrp_rules", "input_embeddings"},  # GLU MLP without a rule; LN(embedding): x . grad = 0
    "beit": {"prediction_row"},  # mean-pooled head
    "dinov2": {"prediction_row"},  # class token + mean of the patches
    "deberta_v2": {"lrp_rules", "attention_outputs"},  # disentangled attention computed inside its module
    "mpnet": {"lrp_rules", "attention_outputs"},  # relative position bias inside its module
    "opt": {"prediction_row", "head_readout", "lrp_rules"},  # no family: the generic fallback
    "data2vec_vision": {"prediction_row", "lrp_rules", "attention_outputs"},  # mean-pooled; attention in its modules
    "swin": {"attentions", "attention_outputs", "hidden_states", "prediction_row", "head_readout",  # windows
             "input_embeddings"},  # LN(patch embedding): x . grad = 0
    "clip": {"prediction_row", "input_embeddings"},  # patch-mean head; conv patch embedding
    "clip_zero_shot": {"input_embeddings"},  # conv patch embedding (its image embedding is the class token's)
}


@pytest.mark.parametrize("family", REGISTERED_FAMILIES)
def test_read_out_of_the_last_layer_reproduces_the_logits(family):
    """The read-out of the last recorded layer output (what LeGrad reads out) reproduces the model's logits.

    ``layer_logits`` is ``read_out`` for every family but the causal LM's, whose logit lens needs the labels.
    """
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=3)
    resolved = resolve_family(model)
    if "head_readout" in EXPECTED_REFUSALS.get(family, set()):
        with pytest.raises(LightningXAIError, match="no family|grids of different sizes"):
            resolved.read_out(torch.zeros(3, 9, 16), torch.zeros(3, dtype=torch.long))
        return
    with torch.no_grad(), resolved.capture().record() as record:
        logits = model(**inputs).logits
    valid = inputs["attention_mask"].bool() if "attention_mask" in inputs else None
    valid = valid if valid is not None else torch.ones(3, record.hidden_states[-1].shape[1], dtype=torch.bool)
    rows = resolved.prediction_rows(inputs, valid)
    torch.testing.assert_close(resolved.layer_logits(record.hidden_states[-1], rows, inputs), logits)


@pytest.mark.parametrize("family", REGISTERED_FAMILIES)
def test_every_parametrised_module_of_a_registered_family_has_an_lrp_rule(family):
    resolved = resolve_family(make_model(family))
    assert resolved.modules_without_lrp_rule() == []
    assert set(resolved.missing_capabilities()) == EXPECTED_REFUSALS.get(family, set())


def test_an_unknown_model_is_refused_listing_the_families_and_what_to_do():
    with pytest.raises(UnsupportedModelError) as error:
        resolve_family(torch.nn.LSTM(4, 4))
    message = str(error.value)
    assert all(name in message for name in set(ARCHITECTURES.values()))
    assert "model_getter=" in message and "family file" in message


def test_a_module_type_without_a_rule_refuses_lrp_instead_of_a_plain_gradient():
    class NoLayerNormRule(BertFamily):
        lrp_rules = {k: v for k, v in BertFamily.lrp_rules.items() if k is not torch.nn.LayerNorm}

    model = make_model("bert")
    with pytest.raises(UnsupportedMethodError, match="'cp_lrp'.*'bert'.*LayerNorm"):
        cp_lrp(model, make_inputs("bert", batch=1), 0, family=NoLayerNormRule(model))


class _LastTokenBert(BertFamily):
    """BERT told that the prediction is carried by the last real token (as a decoder's would be)."""

    def prediction_rows(self, inputs, valid_mask):
        return valid_mask.long().sum(dim=1) - 1


def test_attention_row_methods_read_the_row_the_family_names():
    """Raw attention, rollout, GAE and the cls Shapley game read each sample's prediction row, not row 0."""
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert", batch=3)
    modality = modality_for("bert")
    explainers = [RawAttention(), Rollout(), GAE(), AttentionShapley(game="cls")]
    maps = explain(model, inputs, explainers, modality=modality, family=_LastTokenBert(model))
    for row in range(3):
        single = unpadded_row(inputs, row)
        last = single["input_ids"].shape[1] - 1
        n = last + 1
        expected_raw = raw_attention_reference(model, single, last)
        torch.testing.assert_close(maps["raw_attention"].relevance[row, :n], expected_raw)
        torch.testing.assert_close(maps["rollout"].relevance[row, :n], rollout_reference(model, single, last))
        target = int(maps["gae"].target[row])
        torch.testing.assert_close(maps["gae"].relevance[row, :n], gae_reference(model, single, target, last),
                                   rtol=1e-4, atol=1e-5)
        _, out = eager_outputs(model, single)  # the cls game: phi_i = mean over layers and heads of A[last, i]
        mean_row = torch.stack([a[0].double().mean(dim=0) for a in out.attentions]).mean(dim=0)[last].float()
        expected_cls = torch.where(content_mask(single, n), mean_row, torch.zeros_like(mean_row))
        torch.testing.assert_close(maps["attention_shapley"].relevance[row, :n], expected_cls)
    default = explain(model, inputs, explainers, modality=modality)
    for name in ("raw_attention", "rollout", "gae", "attention_shapley"):
        assert not torch.allclose(default[name].relevance, maps[name].relevance), name


def test_the_family_builds_the_modality():
    tokenizer = make_tokenizer()
    assert isinstance(resolve_family(make_model("bert")).build_modality(tokenizer), TextModality)
    with pytest.raises(LightningXAIError, match="tokenizer="):
        resolve_family(make_model("roberta")).build_modality(None)
    vit, deit = resolve_family(make_model("vit")), resolve_family(make_model("deit"))
    assert isinstance(vit, ViTFamily)
    inputs = make_inputs("vit", batch=1)
    assert vit.build_modality().num_tokens(inputs) == 17 and deit.build_modality().num_tokens(inputs) == 18
    vision = vit.build_modality()
    assert isinstance(vision, VisionModality)
    with pytest.raises(LightningXAIError, match="after 1 prefix tokens"):
        vision.token_masks(inputs, 18)  # a DeiT-shaped sequence is not a ViT's


@pytest.mark.parametrize(
    "architecture", ["deit_with_teacher", "electra", "xlm_roberta", "albert", "beit", "dinov2", "swin", "clip",
                     "clip_zero_shot"]
)
def test_cp_lrp_is_conservative_without_biases(architecture):
    """Biases zeroed, read at the embedding output: the relevance sums to the explained logit (1e-5 relative)."""
    from lightning_xai.explainers.lrp import cp_lrp

    model = make_model(architecture, num_labels=3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    inputs = make_inputs(architecture, batch=3)
    with torch.no_grad():
        logits = model(**inputs).logits
    relevance = cp_lrp(model, inputs, 2)
    torch.testing.assert_close(relevance.sum(dim=1), logits[:, 2], rtol=1e-5, atol=1e-6)


def test_an_in_place_compiled_model_is_explained_through_its_eager_modules():
    """``model.compile()``: the explanation passes run the eager modules (a compiled call skips what they record),
    and the compiled call is back afterwards. The backend here returns a WRONG function on purpose: any pass that
    went through it would give other maps."""
    from lightning_xai.explainers import AttnLRP, GradientXInput, GradSAM, IntegratedGradients, LeGrad

    def wrong_backend(graph_module, example_inputs):
        return lambda *args: [output * 0 if isinstance(output, torch.Tensor) else output
                              for output in graph_module(*args)]

    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert", batch=2)
    methods = [GradientXInput(), GradSAM(), LeGrad(), AttnLRP(), IntegratedGradients(steps=4)]
    expected = explain(model, inputs, methods, modality=modality_for("bert"))
    model.compile(backend=wrong_backend)
    with torch.no_grad():
        assert torch.all(model(**inputs).logits == 0)  # the compiled call is the wrong one
    got = explain(model, inputs, methods, modality=modality_for("bert"))
    for name, explanation in expected.items():
        torch.testing.assert_close(got[name].relevance, explanation.relevance, msg=name)
    with torch.no_grad():
        assert torch.all(model(**inputs).logits == 0)  # restored


@pytest.mark.parametrize(
    ("architecture", "scale_invariant"),
    [("modernbert", True), ("swin", True), ("deberta_v3", True), ("deberta_v2", False), ("bert", False),
     ("mpnet", False)],
)
def test_the_reason_for_refusing_gradient_x_input_holds(architecture, scale_invariant):
    """LayerNorm right after the input embeddings: each token's x . d logit / dx vanishes (Euler: LN is invariant to
    scaling its input, but for its epsilon), so a gradient x input map would show the epsilon, not the model."""
    model = make_model("deberta_v2" if architecture == "deberta_v3" else architecture, num_labels=3).double()
    if architecture == "deberta_v3":  # v3 checkpoints add no absolute position embedding before the LayerNorm
        model.deberta.embeddings.position_biased_input = False
    family = resolve_family(model)
    assert ("input_embeddings" in family.missing_capabilities()) == scale_invariant
    architecture = "deberta_v2" if architecture == "deberta_v3" else architecture
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in make_inputs(architecture, batch=2).items()}
    recorded = []

    def keep(_module, _args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        recorded.append(tensor.detach().requires_grad_())
        return (recorded[-1], *output[1:]) if isinstance(output, tuple) else recorded[-1]

    handle = model.get_input_embeddings().register_forward_hook(keep)
    try:
        logits = model(**inputs).logits
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(logits[:, 1].sum(), recorded[0])
    per_token = (recorded[0] * gradient).sum(-1).abs()
    scale = (recorded[0].abs() * gradient.abs()).sum(-1)
    ratio = per_token[scale > 0] / scale[scale > 0]
    if scale_invariant:
        assert float(ratio.max()) < 1e-3
    else:  # BERT adds position and type embeddings first: a real map
        assert float(ratio.median()) > 1e-2
