import pytest
import torch
from helpers import FAMILIES, make_inputs, make_model, modality_for
from reference.attention import unpadded_row
from reference.legrad import legrad_reference
from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

from lightning_xai import explain
from lightning_xai.errors import LightningXAIError
from lightning_xai.explainers.legrad import LeGrad, legrad


@pytest.mark.parametrize("start_layer", [0, -2, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_legrad_matches_per_sample_reference(family, start_layer):
    model = make_model(family, num_labels=3, layers=3)
    inputs = make_inputs(family, batch=3)
    maps = explain(model, inputs, [LeGrad(start_layer=start_layer)], modality=modality_for(family))["legrad"]
    relevance = maps.relevance
    assert relevance.dtype == torch.float32
    for row in range(3):
        expected = legrad_reference(model, unpadded_row(inputs, row), start_layer=start_layer)
        n = expected.shape[0]
        torch.testing.assert_close(relevance[row, :n], expected, rtol=1e-4, atol=1e-5)
        assert torch.all(relevance[row, n:] == 0)
        assert torch.all(relevance[row][maps.special_mask[row]] == 0)
        torch.testing.assert_close(float(relevance[row].max()), 1.0)


def test_deit_with_teacher_head():
    config = DeiTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        image_size=16,
        patch_size=4,
        num_labels=3,
    )
    model = DeiTForImageClassificationWithTeacher(config).eval()
    maps = explain(model, make_inputs("deit", batch=2), [LeGrad()], modality=modality_for("deit"))["legrad"]
    assert torch.all(maps.relevance[:, :2] == 0) and (maps.relevance > 0).any()


@pytest.mark.parametrize(("start_layer", "expected_calls"), [(1, 0), (0, 1)])
def test_each_layer_gradient_only_traverses_its_own_tail(start_layer, expected_calls):
    """autograd.grad(s^l, A^l) runs no backward below A^l: the L calls cost about one backward in total.

    A hook on layer 0's output fires only when s^0 (whose read-out starts there) is differentiated.
    """
    reached = []

    class Probe(LeGrad):
        name = "legrad_probe"

        def explain(self, forward):
            forward.hidden_states[0].register_hook(lambda g: reached.append(1))
            return super().explain(forward)

    model = make_model("bert", layers=3)
    explain(model, make_inputs("bert"), [Probe(start_layer=start_layer)], modality=modality_for("bert"))
    assert len(reached) == expected_calls


def test_bad_start_layer_and_functional_edge_cases():
    with pytest.raises(LightningXAIError, match="out of range"):
        explain(make_model("bert"), make_inputs("bert"), [LeGrad(start_layer=5)], modality=modality_for("bert"))
    with pytest.raises(ValueError, match="at least one layer"):
        legrad([], torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    constant = legrad([torch.zeros(1, 1, 3, 3)], torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(constant, torch.zeros(1, 3))  # constant map: no division by zero


def test_official_preset_equals_the_official_algorithm_on_zero_shot_clip():
    """LeGrad.official() on CLIPZeroShotClassifier == the released code's algorithm (reference/legrad_official)."""
    from reference.legrad_official import legrad_official_reference

    classifier = make_model("clip_zero_shot", num_labels=3, layers=4)
    inputs = make_inputs("clip_zero_shot", batch=3)
    maps = explain(classifier, inputs, [LeGrad.official()], modality="vision", target=1)["legrad"]
    for row in range(3):
        expected = legrad_official_reference(classifier, inputs["pixel_values"][row : row + 1], prompt=1)
        torch.testing.assert_close(maps.relevance[row, 1:], expected, rtol=1e-4, atol=1e-5)
        assert maps.relevance[row, 0] == 0  # the class token gets no score
    default = explain(classifier, inputs, [LeGrad()], modality="vision", target=1)["legrad"]
    assert not torch.allclose(default.relevance, maps.relevance)  # the presets differ


def test_mean_pooling_runs_on_every_head_shape():
    for family in ("bert", "beit", "dinov2", "llama"):
        model = make_model(family, num_labels=3, layers=3)
        relevance = explain(model, make_inputs(family, batch=2), [LeGrad(pooling="mean")],
                            modality=modality_for(family))["legrad"].relevance
        assert torch.isfinite(relevance).all() and float(relevance.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pooling"):
        LeGrad(pooling="cls")
