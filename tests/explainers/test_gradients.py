import pytest
import torch
from helpers import (
    FAMILIES,
    VISION_FAMILIES,
    assert_same_snapshot,
    make_inputs,
    make_model,
    modality_for,
    model_snapshot,
)
from reference.attention import unpadded_row
from reference.gradients import gradient_x_input_reference, integrated_gradients_reference

from lightning_xai import explain
from lightning_xai.explainers.gradients import GradientXInput, IntegratedGradients, integrated_gradients


def _prefix(family):
    return {"vit": 1, "deit": 2}.get(family, 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_x_input_matches_per_sample_reference(family):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=4)
    maps = explain(model, inputs, [GradientXInput()], modality=modality_for(family))["gradient_x_input"]
    assert maps.signed and maps.relevance.dtype == torch.float32
    p = _prefix(family)
    for row in range(4):
        expected = gradient_x_input_reference(model, unpadded_row(inputs, row))
        n = expected.shape[0] + p
        torch.testing.assert_close(maps.relevance[row, p:n], expected, rtol=1e-4, atol=1e-6)
        assert torch.all(maps.relevance[row, n:] == 0) and torch.all(maps.relevance[row, :p] == 0)
    assert (maps.relevance < 0).any() and (maps.relevance > 0).any()  # signed


@pytest.mark.parametrize("family", FAMILIES)
def test_integrated_gradients_matches_explicit_step_loop(family):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=3)
    method = IntegratedGradients(steps=6, max_batch_size=5)  # chunks cut across samples and steps
    relevance = explain(model, inputs, [method], modality=modality_for(family), target=1)["integrated_gradients"]
    p = _prefix(family)
    for row in range(3):
        expected, _ = integrated_gradients_reference(model, unpadded_row(inputs, row), target=1, steps=6)
        n = expected.shape[0] + p
        torch.testing.assert_close(relevance.relevance[row, p:n], expected, rtol=1e-4, atol=1e-6)
        assert torch.all(relevance.relevance[row, n:] == 0) and torch.all(relevance.relevance[row, :p] == 0)


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_integrated_gradients_completeness(family):
    """sum(IG) -> logit(x) - logit(baseline) as the right Riemann sum converges (error ~ 1/steps)."""
    model = make_model(family, num_labels=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3)  # larger logits: a non-trivial check
    inputs = make_inputs(family, batch=2)
    target = torch.tensor([0, 2])
    coarse, coarse_gap = integrated_gradients(model, inputs, target, steps=20)
    fine, fine_gap = integrated_gradients(model, inputs, target, steps=300, max_batch_size=600)
    difference = fine.sum(1) - fine_gap  # logit(x) - logit(baseline)
    torch.testing.assert_close(coarse.sum(1) - coarse_gap, difference)
    assert torch.all(difference.abs() > 5e-3)
    assert torch.all(fine_gap.abs() < 0.01 * difference.abs() + 1e-3), (fine_gap, difference)
    assert torch.all(fine_gap.abs() < coarse_gap.abs() / 5)
    _, reference_difference = integrated_gradients_reference(model, unpadded_row(inputs, 0), 0, steps=1)
    torch.testing.assert_close(float(difference[0]), reference_difference, rtol=1e-4, atol=1e-5)


def test_token_baseline_and_model_restored():
    model = make_model("bert", num_labels=3).train()
    before = model_snapshot(model)
    inputs = make_inputs("bert", batch=2)
    maps = explain(model, inputs, [IntegratedGradients(steps=4, baseline=4)], modality=modality_for("bert"), target=0)[
        "integrated_gradients"
    ]
    expected, _ = integrated_gradients_reference(model, unpadded_row(inputs, 0), 0, steps=4, baseline_id=4)
    torch.testing.assert_close(maps.relevance[0, : expected.shape[0]], expected, rtol=1e-4, atol=1e-6)
    assert_same_snapshot(before, model_snapshot(model))
    assert all(p.grad is None for p in model.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients(steps=0)
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(baseline="mask")
    model = make_model(VISION_FAMILIES[0])
    with pytest.raises(Exception, match="word-embedding"):
        integrated_gradients(model, make_inputs("vit", batch=1), torch.tensor([0]), steps=2, baseline=3)
