"""Every registered explainer x every registered model family (timm-style registry loop).

Each pair either produces a valid map (shape, float32, finite, padding zero, batched == per-sample, model restored)
or is refused before any forward with an error naming the method, the family and what is missing.
"""

import pytest
import torch
from helpers import ARCHITECTURES, assert_same_snapshot, make_inputs, make_model, modality_for, model_snapshot
from reference.attention import unpadded_row

from lightning_xai import explain
from lightning_xai.errors import UnsupportedMethodError
from lightning_xai.explainers import get_explainer, list_explainers
from lightning_xai.families import BertFamily, list_families, resolve_family

NAMES = sorted(list_explainers())
#: Methods whose maps are not a function of the row alone.
NOT_PER_SAMPLE = {"random"}


def test_every_registered_family_is_built_by_the_tests():
    """A new family must come with a tiny builder in tests/helpers.py, or this registry loop would skip it."""
    assert set(list_families()) == set(ARCHITECTURES.values())
    for architecture, family in ARCHITECTURES.items():
        assert resolve_family(make_model(architecture)).name == family, architecture


@pytest.mark.parametrize("family", list(ARCHITECTURES))
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, family):
    model = make_model(family, num_labels=3).train()
    before = model_snapshot(model)
    modality = modality_for(family)
    inputs = make_inputs(family, batch=3)
    explainer = get_explainer(name)
    refusal = resolve_family(model).refusal(name, explainer.requirements())
    if refusal is not None:  # refused before any forward, saying what and why
        with pytest.raises(UnsupportedMethodError) as error:
            explain(model, inputs, [explainer], modality=modality)
        message = str(error.value)
        assert name in message and f"'{ARCHITECTURES[family]}'" in message and "What to do" in message
        assert_same_snapshot(before, model_snapshot(model))
        return
    maps = explain(model, inputs, [explainer], modality=modality)[name]
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
        single = explain(model, unpadded_row(inputs, row), [get_explainer(name)], modality=modality)[name].relevance[0]
        n = single.shape[0]
        scale = float(relevance[row].abs().max()) + 1e-12
        torch.testing.assert_close(relevance[row, :n] / scale, single / scale, rtol=1e-4, atol=2e-5)
    assert_same_snapshot(before, model_snapshot(model))


class _NoRowNoNorm(BertFamily):
    """A family that cannot say which row predicts and has no LRP rule for LayerNorm (a decoder-like gap)."""

    name = "restricted_bert"
    unsupported = {"prediction_row": "the test says so", "head_readout": "the test says so"}
    lrp_rules = {k: v for k, v in BertFamily.lrp_rules.items() if k is not torch.nn.LayerNorm}


@pytest.mark.parametrize("name", NAMES)
def test_a_family_that_lacks_a_capability_refuses_exactly_the_methods_needing_it(name):
    model = make_model("bert", num_labels=3)
    family = _NoRowNoNorm(model)
    explainer = get_explainer(name)
    lacking = {"prediction_row", "head_readout", "lrp_rules"} & explainer.requirements()
    if lacking:
        with pytest.raises(UnsupportedMethodError) as error:
            explain(model, make_inputs("bert", batch=2), [explainer], modality=modality_for("bert"), family=family)
        message = str(error.value)
        assert f"{name!r}" in message and "'restricted_bert'" in message and "What to do" in message
        assert ("LayerNorm" in message) == ("lrp_rules" in lacking)
    else:
        maps = explain(model, make_inputs("bert", batch=2), [explainer], modality=modality_for("bert"), family=family)
        assert torch.isfinite(maps[name].relevance).all()
