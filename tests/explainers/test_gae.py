import pytest
import torch
from helpers import FAMILIES, make_inputs, make_model, modality_for
from reference.attention import unpadded_row
from reference.gae import gae_reference

from lightning_xai import explain
from lightning_xai.explainers.gae import GAE, gae


@pytest.mark.parametrize("family", FAMILIES)
def test_gae_matches_per_sample_reference(family):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=4)
    relevance = explain(model, inputs, [GAE()], modality=modality_for(family))["gae"].relevance
    assert relevance.dtype == torch.float32
    for row in range(4):
        expected = gae_reference(model, unpadded_row(inputs, row))
        n = expected.shape[0]
        torch.testing.assert_close(relevance[row, :n], expected, rtol=1e-4, atol=1e-6)
        assert torch.all(relevance[row, n:] == 0)


def test_fixed_target_matches_reference():
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert")
    relevance = explain(model, inputs, [GAE()], modality=modality_for("bert"), target=2)["gae"].relevance
    for row in range(4):
        expected = gae_reference(model, unpadded_row(inputs, row), target=2)
        torch.testing.assert_close(relevance[row, : expected.shape[0]], expected, rtol=1e-4, atol=1e-6)


def test_zero_gradients_give_the_identity_row():
    a = torch.softmax(torch.randn(1, 2, 3, 3), dim=-1)
    out = gae([a, a], [torch.zeros_like(a)] * 2, torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="one gradient per attention"):
        gae([a, a], [a], torch.ones(1, 3, dtype=torch.bool))


def test_one_backward_serves_every_attention_explainer(monkeypatch):
    from lightning_xai.explainers import GradSAM
    from lightning_xai.explainers.attention import RawAttention, Rollout
    from lightning_xai.explainers.attention_shapley import AttentionShapley

    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    methods = [GradSAM(), RawAttention(), Rollout(), GAE(), AttentionShapley(weights="grad_attention")]
    maps = explain(make_model("bert"), make_inputs("bert"), methods, modality=modality_for("bert"))
    assert len(calls) == 1
    assert set(maps) == {"grad_sam", "raw_attention", "rollout", "gae", "attention_shapley"}


def test_one_backward_serves_attention_and_embedding_gradients(monkeypatch):
    import torch
    from helpers import make_inputs, make_model, modality_for

    from lightning_xai import explain
    from lightning_xai.explainers import GAE, GradientXInput, GradSAM

    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    methods = [GradSAM(), GAE(), GradientXInput()]
    explain(make_model("bert"), make_inputs("bert"), methods, modality=modality_for("bert"))
    assert len(calls) == 1
