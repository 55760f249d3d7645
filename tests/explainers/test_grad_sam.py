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
from reference.grad_sam import grad_sam_reference

from lightning_xai import explain
from lightning_xai.explainers import GradSAM, Random, grad_sam, list_explainers
from lightning_xai.modalities import select


def _unpadded_row(inputs, row):
    single = select(inputs, slice(row, row + 1))
    if "attention_mask" in single:
        length = int(single["attention_mask"].sum())
        single = {k: v[:, :length] for k, v in single.items()}
    return single


@pytest.mark.parametrize("axis", ["query", "key"])
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_per_sample_reference(family, axis):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=4)
    maps = explain(model, inputs, [GradSAM(axis=axis)], modality=modality_for(family))["grad_sam"]
    assert maps.relevance.dtype == torch.float32
    for row in range(4):
        single = _unpadded_row(inputs, row)
        expected = grad_sam_reference(model, single, target=None, axis=axis)
        n = expected.shape[0]
        torch.testing.assert_close(maps.relevance[row, :n], expected, rtol=1e-4, atol=1e-7)
        assert torch.all(maps.relevance[row, n:] == 0)  # padding gets exactly zero


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_padding_is_zero_and_special_tokens_are_marked(family):
    inputs = make_inputs(family, batch=4)
    maps = explain(make_model(family), inputs, [GradSAM()], modality=modality_for(family))["grad_sam"]
    padding = inputs["attention_mask"] == 0
    assert padding.any()
    assert torch.all(maps.relevance[padding] == 0)
    assert torch.equal(maps.valid_mask, ~padding)
    assert torch.all(maps.special_mask[:, 0])  # [CLS]
    assert torch.all(maps.special_mask[padding])
    lengths = inputs["attention_mask"].sum(1)
    assert all(maps.special_mask[r, lengths[r] - 1] for r in range(4))  # [SEP]
    assert (maps.relevance[maps.content_mask] > 0).any()


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_vision_prefix_tokens_are_special(family):
    maps = explain(make_model(family), make_inputs(family), [GradSAM()], modality=modality_for(family))["grad_sam"]
    prefix = 1 if family == "vit" else 2
    assert maps.relevance.shape == (4, prefix + 16)
    assert torch.all(maps.special_mask[:, :prefix]) and not maps.special_mask[:, prefix:].any()


def test_targets_predicted_label_and_fixed_class():
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert")
    modality = modality_for("bert")
    labels = torch.tensor([2, 0, 1, 2])
    predicted = explain(model, inputs, [GradSAM()], modality=modality)["grad_sam"]
    assert torch.equal(predicted.target, predicted.logits.argmax(-1))
    by_label = explain(model, inputs, [GradSAM()], modality=modality, target="label", labels=labels)["grad_sam"]
    assert torch.equal(by_label.target, labels)
    fixed = explain(model, inputs, [GradSAM()], modality=modality, target=1)["grad_sam"]
    assert torch.equal(fixed.target, torch.ones(4, dtype=torch.long))
    for row in range(4):
        expected = grad_sam_reference(model, _unpadded_row(inputs, row), target=1)
        torch.testing.assert_close(fixed.relevance[row, : expected.shape[0]], expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(Exception, match="needs labels"):
        explain(model, inputs, [GradSAM()], modality=modality, target="label")


def test_invariant_to_batch_composition():
    model = make_model("roberta")
    modality = modality_for("roberta")
    inputs = make_inputs("roberta", batch=6, seed=3)
    full = explain(model, inputs, [GradSAM()], modality=modality)["grad_sam"].relevance
    reordered = torch.tensor([5, 2, 0, 4, 1, 3])
    shuffled = explain(model, select(inputs, reordered), [GradSAM()], modality=modality)["grad_sam"].relevance
    torch.testing.assert_close(shuffled, full[reordered], rtol=1e-5, atol=1e-8)


def test_model_is_untouched_and_no_parameter_grad_is_created():
    model = make_model("bert").train()
    before = model_snapshot(model)
    explain(model, make_inputs("bert"), [GradSAM(), Random()], modality=modality_for("bert"))
    assert_same_snapshot(before, model_snapshot(model))
    assert all(p.grad is None for p in model.parameters())


def test_existing_parameter_grads_are_left_exactly_as_they_were():
    model = make_model("vit").train()
    model(**make_inputs("vit")).logits.sum().backward()  # mid-step: gradients already accumulated
    before = model_snapshot(model)
    explain(model, make_inputs("vit", seed=1), [GradSAM()], modality=modality_for("vit"))
    assert_same_snapshot(before, model_snapshot(model))


def test_model_is_restored_when_an_explainer_raises():
    class Boom(GradSAM):
        name = "boom"

        def explain(self, forward):
            forward.attention_gradients()
            raise RuntimeError("injected")

    model = make_model("distilbert").train()
    before = model_snapshot(model)
    with pytest.raises(RuntimeError, match="injected"):
        explain(model, make_inputs("distilbert"), [Boom()], modality=modality_for("distilbert"))
    assert_same_snapshot(before, model_snapshot(model))
    errors = {}
    maps = explain(model, make_inputs("distilbert"), [Boom(), GradSAM()], modality=modality_for("distilbert"),
                   errors=errors)
    assert set(maps) == {"grad_sam"} and isinstance(errors["boom"], RuntimeError)


def test_frozen_model_can_still_be_explained():
    model = make_model("bert")
    for p in model.parameters():
        p.requires_grad_(False)
    maps = explain(model, make_inputs("bert"), [GradSAM()], modality=modality_for("bert"))["grad_sam"]
    assert (maps.relevance > 0).any()
    assert all(not p.requires_grad for p in model.parameters())


def test_one_backward_serves_every_attention_explainer(monkeypatch):
    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    class KeyAxisGradSAM(GradSAM):
        name = "grad_sam_key"

    monkeypatch.setattr(torch.autograd, "grad", counting)
    maps = explain(make_model("bert"), make_inputs("bert"), [GradSAM(), KeyAxisGradSAM(axis="key")],
                   modality=modality_for("bert"))
    assert len(calls) == 1
    assert not torch.equal(maps["grad_sam"].relevance, maps["grad_sam_key"].relevance)


def test_functional_rejects_bad_arguments():
    a = torch.rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match="axis"):
        grad_sam([a], [a], torch.ones(1, 2, dtype=torch.bool), axis="rows")
    with pytest.raises(ValueError, match="one gradient per attention"):
        grad_sam([a, a], [a], torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="axis"):
        GradSAM(axis="diag")


def test_registry_lists_methods_and_needs():
    registry = list_explainers()
    assert registry["grad_sam"] == frozenset({"attention_gradients"})  # maps come with their gradients (Swin: windows)
    assert "random" in registry


def test_random_baseline_is_reproducible_and_leaves_global_rng_alone():
    model = make_model("bert")
    state = torch.get_rng_state()
    a = explain(model, make_inputs("bert"), [Random(seed=3)], modality=modality_for("bert"))["random"].relevance
    b = explain(model, make_inputs("bert"), [Random(seed=3)], modality=modality_for("bert"))["random"].relevance
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())
