import pytest
import torch
from helpers import make_inputs, make_model, modality_for
from reference.attention import content_mask, unpadded_row
from reference.attention_shapley import (
    max_mutual_value,
    mean_attention_reference,
    mutual_value,
    shapley_by_enumeration,
)

from lightning_xai import explain
from lightning_xai.explainers.attention_shapley import AttentionShapley, max_mutual_shapley, mutual_shapley


def _random_game(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, n, generator=g) * 2, dim=-1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_mutual_closed_form_equals_enumeration(n):
    A = _random_game(n + 2, n)
    content = torch.zeros(1, n + 2, dtype=torch.bool)
    content[0, 1 : n + 1] = True  # [CLS] and [SEP] around the players
    phi = mutual_shapley(A[None], content)[0]
    expected = shapley_by_enumeration(A[1 : n + 1, 1 : n + 1].double(), mutual_value)
    torch.testing.assert_close(phi[1 : n + 1].double(), expected, rtol=1e-5, atol=1e-6)
    assert phi[0] == 0 and phi[-1] == 0


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_max_mutual_enumeration_and_closed_form_equal_the_textbook_shapley(n):
    A = _random_game(n, 10 + n)
    content = torch.ones(1, n, dtype=torch.bool)
    expected = shapley_by_enumeration(A.double(), max_mutual_value)
    enumerated = max_mutual_shapley(A[None], content, exact_max_tokens=12)[0]
    closed = max_mutual_shapley(A[None], content, num_coalitions=None)[0]
    torch.testing.assert_close(enumerated.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(closed.double(), expected, rtol=1e-5, atol=1e-6)


def test_sampler_converges_to_the_exact_values_and_is_seeded():
    n = 9
    A = _random_game(n, 3)[None]
    content = torch.ones(1, n, dtype=torch.bool)
    exact = max_mutual_shapley(A, content, exact_max_tokens=12)[0]
    errors = []
    for coalitions in (100, 20000):
        sampled = max_mutual_shapley(A, content, exact_max_tokens=0, num_coalitions=coalitions, seed=1)[0]
        errors.append(float((sampled - exact).abs().max()))
    assert errors[1] < errors[0] / 4
    assert errors[1] < 0.03 * float(exact.abs().max())
    again = max_mutual_shapley(A, content, exact_max_tokens=0, num_coalitions=100, seed=1)[0]
    other = max_mutual_shapley(A, content, exact_max_tokens=0, num_coalitions=100, seed=2)[0]
    assert torch.equal(again, max_mutual_shapley(A, content, exact_max_tokens=0, num_coalitions=100, seed=1)[0])
    assert not torch.equal(again, other)


@pytest.mark.parametrize("weights", ["attention", "grad_attention"])
@pytest.mark.parametrize("game", ["mutual", "cls", "max_mutual"])
def test_explainer_matches_reference_on_a_tiny_bert(game, weights):
    model = make_model("bert", num_labels=3)
    inputs = make_inputs("bert", batch=4)
    method = AttentionShapley(game=game, weights=weights)
    relevance = explain(model, inputs, [method], modality=modality_for("bert"))["attention_shapley"].relevance
    value = mutual_value if game == "mutual" else max_mutual_value
    for row in range(4):
        single = unpadded_row(inputs, row)
        A = mean_attention_reference(model, single, grad_weighted=weights == "grad_attention")
        content = content_mask(single, A.shape[0])
        if game == "cls":
            expected = A[0, content]
        else:
            expected = shapley_by_enumeration(A[content][:, content], value)
        torch.testing.assert_close(
            relevance[row, : A.shape[0]][content].double(), expected.double(), rtol=1e-4, atol=1e-6
        )
        assert torch.all(relevance[row, : A.shape[0]][~content] == 0)
        assert torch.all(relevance[row, A.shape[0] :] == 0)


def test_sampled_rows_do_not_depend_on_their_batch():
    model = make_model("vit")  # 16 patches > exact_max_tokens: sampled
    inputs = make_inputs("vit", batch=3)
    method = AttentionShapley(game="max_mutual", num_coalitions=50)
    full = explain(model, inputs, [method], modality=modality_for("vit"))["attention_shapley"].relevance
    alone = explain(model, unpadded_row(inputs, 2), [method], modality=modality_for("vit"))
    torch.testing.assert_close(alone["attention_shapley"].relevance[0], full[2])


def test_bad_arguments():
    with pytest.raises(ValueError, match="game"):
        AttentionShapley(game="banzhaf")
    with pytest.raises(ValueError, match="weights"):
        AttentionShapley(weights="gradients")
    with pytest.raises(ValueError, match="num_coalitions"):
        AttentionShapley(num_coalitions=0)
