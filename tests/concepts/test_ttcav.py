"""TTCAV against explicit references: per-token autograd loops and the authors' algorithm written out."""

import copy
import math

import pytest
import torch
from helpers import (
    REGISTERED_FAMILIES,
    VISION_FAMILIES,
    assert_same_snapshot,
    left_padded,
    make_image_inputs,
    make_model,
    make_text_inputs,
    model_snapshot,
)

from lightning_xai.concepts import (
    ConceptVectors,
    TTCAVScore,
    attention_weighted,
    fit_concept_vectors,
    layer_activations,
    positive_fraction,
    token_sensitivities,
    ttcav_scores,
)
from lightning_xai.concepts.stats import one_sample_t_test, two_sample_t_test
from lightning_xai.errors import BatchFormatError, LightningXAIError, UnsupportedMethodError


def _layers(model):
    """The model's transformer blocks: its one ModuleList of ``num_hidden_layers`` modules (found by structure)."""
    count = model.config.num_hidden_layers
    (blocks,) = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count]
    return blocks


def _cavs(width, count=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, width, generator=g), dim=1)


def _real(inputs, row):
    """Row ``row`` of a right-padded text batch without its padding (or one image)."""
    if "attention_mask" not in inputs:
        return {k: v[row : row + 1] for k, v in inputs.items()}
    length = int(inputs["attention_mask"][row].sum())
    return {k: v[row : row + 1, :length] for k, v in inputs.items()}


def _per_token_loop(model, sample, layer, target, cavs):
    """``S[k, t] = d logit_target / d eps_k`` where block ``layer``'s output token ``t`` gets ``+ sum_k eps_k v_k``."""
    block = _layers(model)[layer]
    num_tokens = None
    out = []
    with torch.no_grad():
        num_tokens = model(**sample, output_hidden_states=True).hidden_states[layer + 1].shape[1]
    for t in range(num_tokens):
        eps = torch.zeros(cavs.shape[0], requires_grad=True)

        def shift(_module, _args, output, t=t, eps=eps):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden.clone()
            hidden[0, t] = hidden[0, t] + eps @ cavs
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = block.register_forward_hook(shift)
        try:
            logit = model(**sample).logits[0, target]
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(logit, eps)
        out.append(grad)
    return torch.stack(out, dim=1)  # [K, N]


def _authors_reference(model, sample, layer, target, cavs):
    """The authors' algorithm for one sample (``get_activations_grads_attentions`` + ``get_attn_directional_...``).

    Eager attention with ``output_attentions``, a full backward hook on the block for ``g``, the ``[CLS]`` row (row 0)
    averaged over heads, ``S' = S (||a|| / ||S|| + 1e-8)``, ``D = a S'``. Written for encoders with a ``[CLS]`` row.
    """
    model = copy.deepcopy(model).eval()
    model.set_attn_implementation("eager")
    grads = []
    block = _layers(model)[layer]
    handle = block.register_full_backward_hook(lambda _m, _gi, go: grads.append(go[0].detach()))
    try:
        output = model(**sample, output_attentions=True)
        output.logits[0, target].backward()
    finally:
        handle.remove()
    a = output.attentions[layer][:, :, 0, :].mean(dim=1)  # [1, N]
    d = []
    for v in cavs:
        s = grads[0] @ v  # [1, N]
        scaled = s * (a.norm(p=2, dim=1, keepdim=True) / s.norm(p=2, dim=1, keepdim=True) + 1e-8)
        d.append((a * scaled).detach()[0])
    return torch.stack(d), grads[0][0] @ cavs.T, a.detach()[0]  # D [K, N], S [N, K], a [N]


CASES = [("bert", lambda: make_text_inputs(batch=3, seq=7, pad_last=2)), ("vit", lambda: make_image_inputs(batch=2))]


@pytest.mark.parametrize(("family", "make"), CASES, ids=[c[0] for c in CASES])
def test_directional_derivatives_equal_per_token_autograd_loop(family, make):
    model = make_model(family, seed=1)
    inputs = make()
    cavs = _cavs(model.config.hidden_size)
    target = torch.tensor([1, 0, 1])[: next(iter(inputs.values())).shape[0]]
    out = token_sensitivities(model, inputs, {0: cavs, 1: cavs}, target)
    rows = range(target.shape[0]) if family == "bert" else [1]  # every padded text row; one image (17 tokens)
    for layer in (0, 1):
        for row in rows:
            sample = _real(inputs, row)
            expected = _per_token_loop(model, sample, layer, int(target[row]), cavs)
            n = expected.shape[1]
            scale = float(expected.abs().max())  # tiny BERT's gradients are small (HF's 0.02 initialisation)
            assert scale > 0
            torch.testing.assert_close(out[layer].derivatives[row, :, :n], expected, rtol=1e-4, atol=1e-5 * scale)
            assert not out[layer].derivatives[row, :, n:].any()  # padding


@pytest.mark.parametrize(("family", "make"), CASES, ids=[c[0] for c in CASES])
def test_attention_weighting_equals_authors_algorithm(family, make):
    model = make_model(family, seed=2)
    inputs = make()
    cavs = _cavs(model.config.hidden_size, count=4, seed=5)
    batch = next(iter(inputs.values())).shape[0]
    target = torch.tensor([0, 1, 1])[:batch]
    out = token_sensitivities(model, inputs, {0: cavs, -1: cavs}, target)
    positive = {0: [], 1: []}
    for layer in (0, 1):
        for row in range(batch):
            d, s, a = _authors_reference(model, _real(inputs, row), layer, int(target[row]), cavs)
            n = a.shape[0]
            torch.testing.assert_close(out[layer].attention[row, :n], a, rtol=1e-5, atol=1e-7)
            scale = float(s.abs().max())
            torch.testing.assert_close(out[layer].derivatives[row, :, :n], s.T, rtol=1e-4, atol=1e-5 * scale)
            weighted = out[layer].weighted[row]
            torch.testing.assert_close(weighted[:, :n], d, rtol=1e-4, atol=1e-5 * float(d.abs().max()))
            positive[layer].append(d.mean(dim=1) > 0)  # the authors' token mean, then > 0
    # the score: the fraction of the class's samples with a positive token mean, per CAV (ttcav.py)
    vectors = ConceptVectors({"c": {0: cavs, 1: cavs}}, {0: torch.zeros(0, cavs.shape[1]), 1: torch.zeros(0, 16)})
    for score in ttcav_scores(model, inputs, target, vectors):
        chosen = target == score.class_index
        expected = torch.stack(positive[score.layer])[chosen].float().mean(0)
        torch.testing.assert_close(score.scores, expected)
        assert score.num_samples == int(chosen.sum())


def test_decoder_uses_its_prediction_row_whatever_the_padding():
    model = make_model("llama", seed=3)
    right = make_text_inputs(batch=3, seq=7, pad_last=2)
    left = left_padded(right)
    cavs = _cavs(model.config.hidden_size)
    target = torch.tensor([1, 0, 1])
    a = token_sensitivities(model, right, {1: cavs}, target)[1]
    b = token_sensitivities(model, left, {1: cavs}, target)[1]
    for row in range(3):
        n = int(right["attention_mask"][row].sum())
        # the prediction row is the last real token: its attention row covers every real token (causal)
        assert (a.attention[row, :n] > 0).all()
        torch.testing.assert_close(a.weighted[row, :, :n], b.weighted[row, :, -n:], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(a.attention[row, :n], b.attention[row, -n:], rtol=1e-4, atol=1e-7)


def test_rescaling_and_score_by_hand():
    s = torch.tensor([[[3.0, -4.0, 0.0], [0.0, 0.0, 0.0]], [[-1.0, 0.5, 9.0], [2.0, -1.0, 9.0]]])  # [B=2, K=2, N=3]
    a = torch.tensor([[0.6, 0.8, 0.0], [0.5, 0.5, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])  # row 1's third token is padding
    d = attention_weighted(s, a, valid)
    # row 0, CAV 0: ||a|| = 1, ||S|| = 5 -> S' = S (1/5 + 1e-8), D = a S'
    ratio = 1 / 5 + 1e-8
    torch.testing.assert_close(d[0, 0], torch.tensor([0.6 * 3 * ratio, -0.8 * 4 * ratio, 0.0]))
    assert not d[0, 1].any()  # S = 0: D = 0 (the ratio is undefined)
    # row 1 (padding dropped): ||a|| = sqrt(0.5); CAV 0: ||S|| = sqrt(1.25); CAV 1: ||S|| = sqrt(5)
    for k, (first, second) in enumerate([(-1.0, 0.5), (2.0, -1.0)]):
        ratio = math.sqrt(0.5) / math.hypot(first, second) + 1e-8
        torch.testing.assert_close(d[1, k], torch.tensor([0.5 * first * ratio, 0.5 * second * ratio, 0.0]))
    # token means: row 0 -> (1.8 - 3.2)/3 < 0 and 0; row 1 -> (-0.5 + 0.25) < 0 and (1 - 0.5) > 0
    assert positive_fraction(d, valid).tolist() == [0.0, 0.5]
    assert positive_fraction(d, valid, torch.tensor([False, True])).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="no sample"):
        positive_fraction(d, valid, torch.tensor([False, False]))


def test_score_p_values_by_hand():
    scores = torch.tensor([0.6, 0.7, 0.8, 0.5, 0.9], dtype=torch.float64)
    random = torch.tensor([0.4, 0.55, 0.5], dtype=torch.float64)
    item = TTCAVScore("c", 1, 2, scores, random, 10)
    assert item.score == pytest.approx(0.7)
    t = 0.2 / math.sqrt(0.025 / 5)  # mean 0.7, sample variance 0.025, 4 degrees of freedom
    x = t / math.sqrt(4 + t * t)
    assert item.p_value == pytest.approx(2 * (1 - (0.5 + 0.75 * x * (1 - x * x / 3))), abs=1e-12)
    assert item.p_value == one_sample_t_test(scores.tolist(), 0.5).p_value
    assert item.p_value_random == two_sample_t_test(scores.tolist(), random.tolist()).p_value
    # every CAV scores the same: the authors' test returns NaN (std < 1e-8); no random CAVs: no two-sample test
    same = TTCAVScore("c", 0, 0, torch.ones(4), torch.zeros(0), 3)
    assert math.isnan(same.p_value) and math.isnan(same.p_value_random)


def test_fit_concept_vectors_and_scores_on_tiny_bert():
    model = make_model("bert", seed=4)
    concept = make_text_inputs(batch=6, seq=6, seed=1)
    concept["input_ids"][:, 1] = 5  # "good"
    other = make_text_inputs(batch=6, seq=6, seed=2)
    vectors = fit_concept_vectors(model, {"good": concept, "other": other}, num_cavs=3, num_random_cavs=2)
    assert vectors.layers == [0, 1]
    assert vectors.concepts["good"][1].shape == (3, 16) and vectors.random[1].shape == (2, 16)
    with_negatives = fit_concept_vectors(model, {"good": concept}, other, layers=[-1], num_cavs=2, num_random_cavs=0)
    assert with_negatives.layers == [1] and with_negatives.random[1].shape == (0, 16)
    probe = make_text_inputs(batch=5, seed=3)
    scores = ttcav_scores(model, probe, torch.tensor([0, 1, 0, 1, 1]), vectors, batch_size=2)
    keys = [(s.concept, s.class_index, s.layer) for s in scores]
    assert keys == [(c, k, layer) for c in ("good", "other") for k in (0, 1) for layer in (0, 1)]
    assert all(s.scores.shape == (3,) and s.random_scores.shape == (2,) for s in scores)
    assert [s.num_samples for s in scores[:4]] == [2, 2, 3, 3]
    without_random = ttcav_scores(model, probe, torch.tensor([0, 1, 0, 1, 1]), with_negatives)
    assert all(s.random_scores.numel() == 0 and math.isnan(s.p_value_random) for s in without_random)
    with pytest.raises(ValueError, match="at least two concepts"):
        fit_concept_vectors(model, {"good": concept})
    with pytest.raises(LightningXAIError, match="does not exist"):
        layer_activations(model, concept, [5])


def test_passes_leave_the_model_and_rng_alone():
    model = make_model("bert", seed=5).train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = model_snapshot(model)
    state = torch.random.get_rng_state()
    inputs = make_text_inputs(batch=2)
    token_sensitivities(model, inputs, {1: _cavs(16)}, torch.tensor([0, 1]))
    layer_activations(model, inputs)
    assert_same_snapshot(before, model_snapshot(model))
    assert torch.equal(state, torch.random.get_rng_state())


def test_refused_where_the_family_has_no_block_outputs_on_one_axis():
    model = make_model("swin")
    with pytest.raises(UnsupportedMethodError, match="ttcav"):
        token_sensitivities(model, make_image_inputs(batch=1), {0: _cavs(16)}, torch.tensor([0]))


#: Families TTCAV must serve (encoders read at [CLS], decoders at their last real token).
SERVED = ("bert", "roberta", "distilbert", "electra", "deberta_v2", "vit", "deit", "llama", "gpt2")


@pytest.mark.parametrize("family", REGISTERED_FAMILIES)
def test_every_family_is_served_or_refused_with_the_reason(family):
    model = make_model(family)
    inputs = make_image_inputs(batch=2) if family in VISION_FAMILIES else make_text_inputs(batch=2)
    cavs = _cavs(16)
    try:
        out = token_sensitivities(model, inputs, {-1: cavs}, torch.tensor([0, 1]))
    except UnsupportedMethodError as error:  # no prediction row (mean-pooled heads), no single token axis (Swin)
        assert family not in SERVED and "'ttcav' cannot explain" in str(error)
        return
    except BatchFormatError:  # a family that needs more than these inputs (a causal LM's completion labels)
        assert family not in SERVED
        return
    (item,) = out.values()
    assert torch.isfinite(item.weighted).all() and item.derivatives.abs().sum() > 0
    torch.testing.assert_close(item.attention.sum(-1), torch.ones(2))  # one softmax row over the real tokens
