"""Student's t-distribution and the t-tests of TTCAV, in plain Python (no scipy).

The t-distribution's CDF is written through the regularized incomplete beta function,
``P(|T| > |t|) = I_{ν/(ν+t²)}(ν/2, 1/2)`` (Abramowitz & Stegun 26.7.1), evaluated with the continued fraction of
A&S 26.5.8 by the modified Lentz method (Numerical Recipes §6.4). Accurate to about 1e-12 for the degrees of
freedom TTCAV sees (a few to a few hundred CAVs).

Tests (``tests/concepts/test_stats.py``): closed forms for ν = 1, 2, 4, textbook critical values, and the
one- and two-sample tests by hand.

Example:
    >>> round(student_t_cdf(2.228, 10), 4)  # the 97.5 % point of t(10) in every table
    0.975
    >>> result = one_sample_t_test([0.6, 0.7, 0.8, 0.5, 0.9], 0.5)
    >>> round(result.statistic, 4), result.df, round(result.p_value, 4)
    (2.8284, 4.0, 0.0474)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TTestResult",
    "one_sample_t_test",
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_two_sided_p",
    "two_sample_t_test",
]

_TINY = 1e-300
_EPS = 1e-15
_MAX_ITERATIONS = 10_000


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (A&S 26.5.8), modified Lentz; converges fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for x={x}, a={a}, b={b}")


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """``I_x(a, b) = B(x; a, b) / B(a, b)`` for ``0 <= x <= 1`` and ``a, b > 0``.

    Uses the symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)`` so the continued fraction is always evaluated where it
    converges quickly.

    Example:
        >>> regularized_incomplete_beta(0.3, 1.0, 1.0)  # uniform distribution: I_x(1, 1) = x
        0.3
        >>> round(regularized_incomplete_beta(0.5, 2.0, 3.0), 6)  # 1 - (1-x)^3 (1+3x) = 11/16
        0.6875
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"a and b must be > 0; got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1]; got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(1.0 - x, b, a) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for ``T ~ t(df)``: ``I_{df/(df+t²)}(df/2, 1/2)`` (A&S 26.7.1).

    ``t = ±inf`` gives 0; NaN gives NaN.

    Example:
        >>> round(student_t_two_sided_p(12.706, 1), 4)  # the two-sided 5 % point of t(1)
        0.05
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0; got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for ``T ~ t(df)`` (any real ``df > 0``).

    Example:
        >>> student_t_cdf(0.0, 7)
        0.5
        >>> abs(student_t_cdf(1.0, 1) - 0.75) < 1e-12  # Cauchy: 1/2 + atan(t)/pi
        True
    """
    if math.isnan(t):
        return math.nan
    tail = 0.5 * student_t_two_sided_p(t, df)
    return 1.0 - tail if t > 0 else tail


@dataclass(frozen=True)
class TTestResult:
    """A t-test's outcome.

    Attributes:
        statistic: the t statistic (``±inf`` when the samples have no spread but differ; NaN when undefined).
        p_value: two-sided p-value (NaN when undefined).
        df: degrees of freedom.
    """

    statistic: float
    p_value: float
    df: float


def _mean_and_variance(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the unbiased (ddof=1) variance."""
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def _test_from(difference: float, standard_error: float, df: float) -> TTestResult:
    """The statistic ``difference / standard_error`` and its two-sided p; a zero standard error as in scipy."""
    if standard_error == 0.0:  # no spread: t = ±inf (p = 0) if the means differ, 0/0 (NaN) if they do not
        if difference == 0.0:
            return TTestResult(math.nan, math.nan, df)
        return TTestResult(math.copysign(math.inf, difference), 0.0, df)
    statistic = difference / standard_error
    return TTestResult(statistic, student_t_two_sided_p(statistic, df), df)


def one_sample_t_test(values: Sequence[float], popmean: float = 0.5) -> TTestResult:
    """Two-sided one-sample t-test of ``mean(values) == popmean`` (as ``scipy.stats.ttest_1samp``).

    TTCAV (Eggen et al. 2025, ``ttcav/t_test.py``) tests the scores of the CAVs against 0.5, the score of a
    direction unrelated to the class.

    Args:
        values: one score per CAV (at least 2).
        popmean: the null hypothesis' mean.

    Example:
        >>> one_sample_t_test([1.0, 1.0, 1.0]).p_value  # every CAV agrees: no spread, t = +inf
        0.0
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"a t-test needs at least 2 values; got {len(values)}")
    mean, variance = _mean_and_variance(values)
    return _test_from(mean - popmean, math.sqrt(variance / len(values)), len(values) - 1.0)


def two_sample_t_test(first: Sequence[float], second: Sequence[float]) -> TTestResult:
    """Two-sided two-sample Student t-test with pooled variance (``scipy.stats.ttest_ind`` defaults).

    This is TCAV's test (Kim et al. 2018): the scores of the concept's CAVs against those of random CAVs.

    Example:
        >>> result = two_sample_t_test([0.9, 0.8, 0.85], [0.5, 0.55, 0.45])
        >>> round(result.statistic, 3), result.df
        (8.573, 4.0)
    """
    first, second = [float(v) for v in first], [float(v) for v in second]
    if len(first) < 2 or len(second) < 2:
        raise ValueError(f"a two-sample t-test needs at least 2 values per sample; got {len(first)}, {len(second)}")
    mean_1, var_1 = _mean_and_variance(first)
    mean_2, var_2 = _mean_and_variance(second)
    n_1, n_2 = len(first), len(second)
    df = n_1 + n_2 - 2.0
    pooled = ((n_1 - 1) * var_1 + (n_2 - 1) * var_2) / df
    return _test_from(mean_1 - mean_2, math.sqrt(pooled * (1.0 / n_1 + 1.0 / n_2)), df)
