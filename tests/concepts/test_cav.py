"""CAV fitting: a planted direction is recovered; the batched Newton solve equals scikit-learn's optimum."""

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from lightning_xai.concepts.cav import TokenActivations, concept_cavs, fit_cavs, random_cavs


def _planted(seed: int = 0, width: int = 16, count: int = 60, tokens: int = 5):
    """Every token of a concept example lies on the positive side of ``v*``, every negative token on its negative side.

    The rest of each activation is isotropic noise orthogonal to ``v*``, so ``v*`` is the direction that separates.
    """
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(width, generator=g), dim=0)

    def rows(n: int, sign: float) -> torch.Tensor:
        noise = torch.randn(n, width, generator=g)
        noise = noise - (noise @ direction)[:, None] * direction
        along = sign * (0.2 + torch.randn(n, generator=g).abs())
        return noise + along[:, None] * direction

    concept = TokenActivations(rows(count * tokens, 1.0), torch.arange(count * tokens) // tokens, count)
    pool = TokenActivations(rows(3 * count * tokens, -1.0), torch.arange(3 * count * tokens) // tokens, 3 * count)
    return direction, concept, pool


def test_planted_direction_is_recovered():
    direction, concept, pool = _planted()
    cavs = concept_cavs(concept, pool, num_cavs=5)
    assert cavs.shape == (5, 16)
    torch.testing.assert_close(cavs.norm(dim=1), torch.ones(5))
    assert (cavs @ direction).min() >= 0.99  # measured: 0.998
    assert not torch.allclose(cavs[0], cavs[1])  # the negatives are redrawn per CAV


def test_fit_equals_scikit_learn_optimum():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.tensor([1, 5, 0.2, 1, 3, 1.0]).double()
    y = (
        x @ torch.randn(6, generator=g, dtype=torch.float64) + 0.5 * torch.randn(200, generator=g, dtype=torch.float64)
        > 0.3
    )
    positive = torch.stack([y, y[torch.randperm(200, generator=g)]], dim=1)
    ours = fit_cavs(x, positive, ~positive, inverse_regularization=0.7)
    for k in range(2):
        reference = LogisticRegression(C=0.7, tol=1e-12, max_iter=10_000).fit(x.numpy(), positive[:, k].numpy())
        coef = torch.nn.functional.normalize(torch.from_numpy(reference.coef_[0]), dim=0)
        assert float(ours[k] @ coef) > 1 - 1e-8


def test_rows_outside_a_cav_are_ignored():
    x = torch.tensor([[2.0, 0.0], [3.0, 1.0], [-2.0, 0.0], [-3.0, -1.0], [100.0, -100.0]])
    pos = torch.tensor([[True], [True], [False], [False], [False]])
    neg = torch.tensor([[False], [False], [True], [True], [False]])
    only_four = fit_cavs(x[:4], pos[:4], neg[:4])
    torch.testing.assert_close(fit_cavs(x, pos, neg), only_four)


def test_token_activations_drop_padding_and_renumber():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    acts = TokenActivations.from_hidden(hidden, valid)
    assert acts.values.tolist() == [[0, 1], [2, 3], [6, 7], [8, 9], [10, 11]]
    both = TokenActivations.concatenate([acts, acts])
    assert both.count == 4 and both.example.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert both.rows_of(torch.tensor([1, 2])).tolist() == [
        False,
        False,
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_random_cavs_mean_nothing():
    direction, concept, pool = _planted(seed=1)
    cavs = random_cavs(pool, num_cavs=4, size=60)  # both sides from the negatives: nothing to separate
    assert cavs.shape == (4, 16)
    assert (cavs @ direction).abs().max() < 0.8


def test_errors():
    x = torch.randn(4, 2)
    pos = torch.tensor([[True], [True], [False], [False]])
    with pytest.raises(ValueError, match="both a positive and a negative"):
        fit_cavs(x, pos, pos)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        fit_cavs(x, pos, torch.zeros_like(pos))
    _, concept, _ = _planted(count=4)
    small = TokenActivations(torch.randn(3, 16), torch.arange(3), 3)
    with pytest.raises(ValueError, match="at least as many negatives"):
        concept_cavs(concept, small, num_cavs=1)
    with pytest.raises(ValueError, match="at least 2 examples"):
        random_cavs(TokenActivations(torch.randn(1, 16), torch.zeros(1, dtype=torch.long), 1), 1, 1)


def test_fit_ignores_mixed_precision_autocast():
    direction, concept, pool = _planted(seed=2, count=20)
    expected = concept_cavs(concept, pool, num_cavs=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(concept_cavs(concept, pool, num_cavs=2), expected)
