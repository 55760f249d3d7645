"""Student's t-distribution and the t-tests against closed forms, tables and a numerical integral."""

import math

import pytest

from lightning_xai.concepts.stats import (
    one_sample_t_test,
    regularized_incomplete_beta,
    student_t_cdf,
    student_t_two_sided_p,
    two_sample_t_test,
)


def _density(t: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def _cdf_by_simpson(t: float, df: float, steps: int = 4000) -> float:
    """0.5 + the integral of the density from 0 to t (composite Simpson): independent of the continued fraction."""
    h = t / steps
    total = _density(0.0, df) + _density(t, df)
    total += sum((4 if i % 2 else 2) * _density(i * h, df) for i in range(1, steps))
    return 0.5 + total * h / 3


@pytest.mark.parametrize("t", [-3.0, -0.7, 0.0, 0.4, 1.0, 2.5, 8.0])
def test_closed_forms(t):
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    x = t / math.sqrt(4 + t * t)
    assert student_t_cdf(t, 4) == pytest.approx(0.5 + 0.75 * x * (1 - x * x / 3), abs=1e-12)


@pytest.mark.parametrize(("df", "t"), [(3, 1.7), (7.5, -2.2), (29, 2.9), (120, 0.3)])
def test_cdf_equals_numerical_integral(df, t):
    assert student_t_cdf(t, df) == pytest.approx(_cdf_by_simpson(t, df), abs=1e-10)


@pytest.mark.parametrize(("df", "critical"), [(1, 12.706), (4, 2.776), (10, 2.228), (30, 2.042), (49, 2.010)])
def test_textbook_two_sided_5_percent_points(df, critical):
    assert student_t_two_sided_p(critical, df) == pytest.approx(0.05, abs=2e-4)


def test_incomplete_beta_symmetry_and_edges():
    assert regularized_incomplete_beta(0.3, 2.5, 4.0) == pytest.approx(1 - regularized_incomplete_beta(0.7, 4.0, 2.5))
    assert regularized_incomplete_beta(0.0, 2, 3) == 0.0 and regularized_incomplete_beta(1.0, 2, 3) == 1.0
    with pytest.raises(ValueError, match="x must lie"):
        regularized_incomplete_beta(1.5, 1, 1)


def test_one_sample_by_hand():
    values = [0.6, 0.7, 0.8, 0.5, 0.9]  # mean 0.7, sample variance 0.025
    result = one_sample_t_test(values, 0.5)
    t = 0.2 / math.sqrt(0.025 / 5)
    assert result.statistic == pytest.approx(t) and result.df == 4
    x = t / math.sqrt(4 + t * t)
    assert result.p_value == pytest.approx(2 * (1 - (0.5 + 0.75 * x * (1 - x * x / 3))), abs=1e-12)


def test_two_sample_by_hand():
    first, second = [0.9, 0.8, 0.85, 0.95], [0.5, 0.55, 0.45]
    mean_1, mean_2 = sum(first) / 4, sum(second) / 3
    var_1 = sum((v - mean_1) ** 2 for v in first) / 3
    var_2 = sum((v - mean_2) ** 2 for v in second) / 2
    pooled = (3 * var_1 + 2 * var_2) / 5
    t = (mean_1 - mean_2) / math.sqrt(pooled * (1 / 4 + 1 / 3))
    result = two_sample_t_test(first, second)
    assert result.statistic == pytest.approx(t) and result.df == 5
    assert result.p_value == pytest.approx(2 * (1 - _cdf_by_simpson(t, 5)), abs=1e-9)


def test_degenerate_samples():
    assert one_sample_t_test([1.0, 1.0]).p_value == 0.0
    assert math.isnan(one_sample_t_test([0.5, 0.5]).p_value)
    with pytest.raises(ValueError, match="at least 2"):
        one_sample_t_test([0.7])
    with pytest.raises(ValueError, match="at least 2"):
        two_sample_t_test([0.7, 0.8], [0.5])
