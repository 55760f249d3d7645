import pytest
import torch
from helpers import FAMILIES, make_inputs, make_model, modality_for
from reference.attention import raw_attention_reference, rollout_reference, unpadded_row

from lightning_xai import explain
from lightning_xai.explainers.attention import RawAttention, Rollout, raw_attention, rollout


@pytest.mark.parametrize("family", FAMILIES)
def test_raw_attention_and_rollout_match_per_sample_references(family):
    model = make_model(family, num_labels=3)
    inputs = make_inputs(family, batch=4)
    maps = explain(model, inputs, [RawAttention(), Rollout()], modality=modality_for(family))
    for name, reference in (("raw_attention", raw_attention_reference), ("rollout", rollout_reference)):
        relevance = maps[name].relevance
        assert relevance.dtype == torch.float32
        for row in range(4):
            expected = reference(model, unpadded_row(inputs, row))
            n = expected.shape[0]
            torch.testing.assert_close(relevance[row, :n], expected, rtol=1e-4, atol=1e-6)
            assert torch.all(relevance[row, n:] == 0)
            if name == "rollout":
                torch.testing.assert_close(float(relevance[row].sum()), 1.0, rtol=1e-5, atol=1e-5)


def test_rollout_of_identity_attention_is_one_hot():
    eye = torch.eye(4).expand(1, 2, 4, 4)
    out = rollout([eye, eye, eye], torch.ones(1, 4, dtype=torch.bool))
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_padding_rows_and_columns_are_excluded_before_renormalising():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(2, 2, 5, 5, generator=g), dim=-1)
    valid = torch.tensor([[True, True, True, False, False]])
    padded = rollout([a[:1], a[1:]], valid)
    assert torch.all(padded[0, 3:] == 0)
    torch.testing.assert_close(float(padded.sum()), 1.0)
    assert raw_attention([a[:1]], valid)[0, 3:].eq(0).all()
