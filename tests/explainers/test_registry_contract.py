"""Every explainer x every model family: the contract of ``explain()``'s output."""

import pytest
import torch
from helpers import FAMILIES, assert_same_snapshot, make_inputs, make_model, modality_for, model_snapshot
from reference.attention import unpadded_row

from lightning_xai import explain
from lightning_xai.explainers import get_explainer, list_explainers
from lightning_xai.explainers.attention import RawAttention, Rollout
from lightning_xai.explainers.attention_shapley import AttentionShapley
from lightning_xai.explainers.gae import GAE
from lightning_xai.explainers.gradients import GradientXInput, IntegratedGradients
from lightning_xai.explainers.legrad import LeGrad

#: Until the lead registers them, this engineer's classes are listed here too.
LOCAL = {
    cls.name: cls for cls in (LeGrad, RawAttention, Rollout, GAE, GradientXInput, IntegratedGradients, AttentionShapley)
}
NAMES = sorted(set(list_explainers()) | set(LOCAL))
#: Methods whose maps are not a function of the row alone.
NOT_PER_SAMPLE = {"random"}


def _make(name):
    return get_explainer(name) if name in list_explainers() else LOCAL[name]()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, family):
    model = make_model(family, num_labels=3).train()
    before = model_snapshot(model)
    modality = modality_for(family)
    inputs = make_inputs(family, batch=3)
    maps = explain(model, inputs, [_make(name)], modality=modality)[name]
    relevance = maps.relevance
    num_tokens = maps.valid_mask.shape[1]
    assert relevance.shape == (3, num_tokens)
    assert relevance.dtype == torch.float32
    assert torch.isfinite(relevance).all()
    assert torch.all(relevance[~maps.valid_mask] == 0)
    assert (relevance != 0).any()
    assert_same_snapshot(before, model_snapshot(model))
    if name in NOT_PER_SAMPLE:
        return
    for row in (1, 2):  # padded rows, each alone and unpadded
        single = explain(model, unpadded_row(inputs, row), [_make(name)], modality=modality)[name].relevance[0]
        n = single.shape[0]
        scale = float(relevance[row].abs().max()) + 1e-12
        torch.testing.assert_close(relevance[row, :n] / scale, single / scale, rtol=1e-4, atol=2e-5)
    assert_same_snapshot(before, model_snapshot(model))
