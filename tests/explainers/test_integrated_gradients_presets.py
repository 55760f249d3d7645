"""IntegratedGradients presets: captum's quadrature rules and the keep-special baseline, against captum itself and a
slow reference written from the formulas."""

import numpy as np
import pytest
import torch
from helpers import make_inputs, make_model, modality_for
from reference.attention import unpadded_row
from reference.integrated_gradients import (
    integrated_gradients_quadrature_reference,
    keep_special_baseline,
    rule,
)

from lightning_xai import explain
from lightning_xai.errors import LightningXAIError
from lightning_xai.examples import tiny_bert, tiny_text_batch, tiny_text_modality
from lightning_xai.explainers.gradients import METHODS, IntegratedGradients, integrated_gradients, quadrature

SPECIAL_IDS = {0, 1, 2, 3, 4}  # helpers.text_modality(): [PAD], [UNK], [CLS], [SEP], [MASK]


def _sharpened(family):
    """A tiny random classifier with parameters x3: logits far from linear in the embeddings, so the rules differ."""
    model = make_model(family, num_labels=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3)
    return model


def _captum_layer_ig(model, inputs, target, special, steps, method):
    """captum's LayerIntegratedGradients on the word embeddings, baseline ids: special tokens kept, [PAD] elsewhere."""
    captum_attr = pytest.importorskip("captum.attr")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    reference_ids = torch.where(special, ids, torch.full_like(ids, model.config.pad_token_id))

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    layer_ig = captum_attr.LayerIntegratedGradients(forward, model.get_input_embeddings())
    attributions, delta = layer_ig.attribute(ids, baselines=reference_ids, additional_forward_args=(mask,),
                                             target=target, n_steps=steps, method=method,
                                             return_convergence_delta=True)
    return attributions.sum(-1).detach(), delta.detach()


def _relative_error(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "llama"])
def test_captum_preset_equals_captum_layer_integrated_gradients(family):
    """IntegratedGradients.captum() = captum's LIG(n_steps=50, gausslegendre) with the keep-special [PAD] baseline."""
    model, inputs = _sharpened(family), make_inputs(family, batch=4)
    maps = explain(model, inputs, [IntegratedGradients.captum()], modality=modality_for(family))["integrated_gradients"]
    theirs, delta = _captum_layer_ig(model, inputs, maps.target, maps.special_mask, 50, "gausslegendre")
    theirs = theirs * inputs["attention_mask"]  # our maps are 0 at padding; captum's are 0 there too (e = e')
    assert _relative_error(maps.relevance, theirs) < 1e-5, _relative_error(maps.relevance, theirs)
    torch.testing.assert_close(maps.relevance, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))
    assert torch.all(maps.relevance[maps.special_mask] == 0)  # kept positions: e = e'
    _, gap = integrated_gradients(model, inputs, maps.target, steps=50, baseline="keep_special",
                                  method="gausslegendre", special_mask=maps.special_mask)
    if family != "roberta":  # captum's delta runs the baseline ids: RoBERTa then numbers their positions differently
        torch.testing.assert_close(gap, delta.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_every_rule_equals_captum(method):
    model, inputs = _sharpened("bert"), make_inputs("bert", batch=3)
    explainer = IntegratedGradients(steps=7, baseline="keep_special", method=method, max_batch_size=5)
    maps = explain(model, inputs, [explainer], modality=modality_for("bert"))["integrated_gradients"]
    theirs, _ = _captum_layer_ig(model, inputs, maps.target, maps.special_mask, 7, method)
    assert _relative_error(maps.relevance, theirs * inputs["attention_mask"]) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_quadrature_equals_the_textbook_rule(method):
    """Nodes and weights equal the slow reference's (Gauss-Legendre from the Legendre recurrence, not numpy)."""
    for steps in (2, 7, 50):
        nodes, weights = quadrature(method, steps)
        ours = [1 / steps] * steps if weights is None else weights.tolist()
        np.testing.assert_allclose(nodes.numpy(), [a for a, _ in rule(method, steps)], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours, [w for _, w in rule(method, steps)], rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_quadrature_equals_captums_nodes_and_weights(method):
    approximation = pytest.importorskip("captum.attr._utils.approximation_methods")
    step_sizes, alphas = approximation.approximation_parameters(method)
    for steps in (2, 7, 50):
        nodes, weights = quadrature(method, steps)
        np.testing.assert_allclose(nodes.numpy(), alphas(steps), rtol=1e-6, atol=1e-7)
        ours = [1 / steps] * steps if weights is None else weights.tolist()
        np.testing.assert_allclose(ours, step_sizes(steps), rtol=1e-6)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_keep_special_gausslegendre_equals_slow_reference(family):
    model, inputs = _sharpened(family), make_inputs(family, batch=3)
    explainer = IntegratedGradients(steps=12, baseline="keep_special", method="gausslegendre", max_batch_size=7)
    maps = explain(model, inputs, [explainer], modality=modality_for(family), target=1)["integrated_gradients"]
    for row in range(3):
        single = unpadded_row(inputs, row)
        baseline = keep_special_baseline(model, single["input_ids"][0].tolist(), SPECIAL_IDS, fill_id=0)
        expected, _ = integrated_gradients_quadrature_reference(model, single, 1, 12, "gausslegendre", baseline)
        n = expected.shape[0]
        torch.testing.assert_close(maps.relevance[row, :n], expected, rtol=1e-4, atol=1e-6)
        assert torch.all(maps.relevance[row, n:] == 0)


def test_gausslegendre_converges_faster_than_the_right_sum():
    """Same 20 evaluations: Gauss-Legendre's completeness gap is far below the right Riemann sum's."""
    model, inputs = _sharpened("bert"), make_inputs("bert", batch=2)
    target = torch.tensor([0, 2])
    _, right = integrated_gradients(model, inputs, target, steps=20)
    _, gauss = integrated_gradients(model, inputs, target, steps=20, method="gausslegendre")
    assert torch.all(gauss.abs() < right.abs() / 10), (gauss, right)


def test_baseline_token_fills_the_non_special_positions():
    model, inputs, text = tiny_bert(), tiny_text_batch(), tiny_text_modality()
    target = 1
    pad = explain(model, inputs, [IntegratedGradients(steps=5, baseline="keep_special")], modality=text, target=target)
    mask = explain(model, inputs, [IntegratedGradients(steps=5, baseline="keep_special", baseline_token=4)],
                   modality=text, target=target)
    special = torch.tensor([[True, False, False, True, True]])
    for maps, fill in ((pad, 0), (mask, 4)):
        baseline = model.get_input_embeddings()(torch.where(special, inputs["input_ids"], fill)).detach()
        single = unpadded_row(inputs, 0)
        expected, _ = integrated_gradients_quadrature_reference(model, single, 1, 5, "riemann_right", baseline[:, :4])
        torch.testing.assert_close(maps["integrated_gradients"].relevance[0, :4], expected, rtol=1e-4, atol=1e-8)
    assert not torch.equal(pad["integrated_gradients"].relevance, mask["integrated_gradients"].relevance)


def test_keep_special_on_patch_embeddings_is_the_zero_baseline():
    """ViT/DeiT: no special token among the patch embeddings (prefix tokens come later), so the baseline is zero."""
    model, inputs = make_model("deit", num_labels=3), make_inputs("deit", batch=2)
    methods = [IntegratedGradients(steps=4, method="gausslegendre"),
               IntegratedGradients(steps=4, method="gausslegendre", baseline="keep_special")]
    a, b = (explain(model, inputs, [m], modality=modality_for("deit"), target=0)["integrated_gradients"].relevance
            for m in methods)
    torch.testing.assert_close(a, b)


def test_riemann_right_is_the_default_and_unchanged():
    explainer = IntegratedGradients()
    assert (explainer.steps, explainer.baseline, explainer.method) == (20, "zero", "riemann_right")
    nodes, weights = quadrature("riemann_right", 6)
    assert weights is None and torch.equal(nodes, torch.arange(1, 7, dtype=torch.float32) / 6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        IntegratedGradients(method="simpson")
    with pytest.raises(ValueError, match="at least 2"):
        IntegratedGradients(steps=1, method="riemann_trapezoid")
    with pytest.raises(ValueError, match="baseline_token"):
        IntegratedGradients(baseline_token=4)
    with pytest.raises(ValueError, match="keep_special"):
        IntegratedGradients(baseline="special")
    model, inputs = tiny_bert(), tiny_text_batch()
    with pytest.raises(ValueError, match="special_mask"):
        integrated_gradients(model, inputs, torch.tensor([0]), steps=2, baseline="keep_special")
    model.config.pad_token_id = None
    with pytest.raises(LightningXAIError, match="baseline_token"):
        integrated_gradients(model, inputs, torch.tensor([0]), steps=2, baseline="keep_special",
                             special_mask=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(LightningXAIError, match="special_mask"):
        integrated_gradients(model, inputs, torch.tensor([0]), steps=2, baseline="keep_special", baseline_token=0,
                             special_mask=torch.zeros(1, 4, dtype=torch.bool))
