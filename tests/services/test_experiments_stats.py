"""The readout's statistics from sums, checked against published values and against
scipy's own computations on the raw samples."""

from __future__ import annotations

import random

import pytest
from scipy import stats as sp

from services.experiments.stats import (
    Moments,
    mean_interval,
    proportion_delta,
    sample_ratio,
    welch_delta,
    wilson,
)


def test_wilson_matches_the_published_intervals() -> None:
    # Newcombe (1998), table I: 0/10 -> [0, 0.2775]; 81/263 -> [0.2553, 0.3662]
    none = wilson(0, 10)
    assert (none.low, round(none.high, 4)) == (0.0, 0.2775)
    some = wilson(81, 263)
    assert (round(some.low, 4), round(some.high, 4)) == (0.2553, 0.3662)
    # and scipy's own Wilson interval
    ci = sp.binomtest(81, 263).proportion_ci(method="wilson")
    assert (some.low, some.high) == pytest.approx((ci.low, ci.high))


def test_newcombes_difference_matches_the_published_interval() -> None:
    # Newcombe (1998), table II, example (56/70 - 48/80): [0.0524, 0.3339]
    delta = proportion_delta((48, 80), (56, 70))
    assert (round(delta.low, 4), round(delta.high, 4)) == (0.0524, 0.3339)


def moments(sample: list[float]) -> Moments:
    return Moments(len(sample), sum(sample), sum(x * x for x in sample))


def test_means_from_sums_match_scipy_on_the_samples() -> None:
    rng = random.Random(7)
    a = [rng.gauss(300, 40) for _ in range(400)]
    b = [rng.gauss(320, 90) for _ in range(150)]
    welch = sp.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    got = welch_delta(moments(a), moments(b))
    assert (got.low, got.high) == pytest.approx((welch.low, welch.high), rel=1e-6)
    one = sp.ttest_1samp(a, 0).confidence_interval(0.95)
    mean = mean_interval(moments(a))
    assert (mean.low, mean.high) == pytest.approx((one.low, one.high), rel=1e-6)


def test_a_sample_ratio_mismatch_is_flagged_only_when_unlikely() -> None:
    assert not sample_ratio([5000, 5000], [1, 1]).mismatch
    assert not sample_ratio([5000, 4700], [1, 1]).mismatch  # p = 0.002: a fluke, possibly
    flagged = sample_ratio([5000, 4600], [1, 1])
    assert flagged.mismatch and flagged.p_value == pytest.approx(4.45e-5, rel=0.01)
    assert not sample_ratio([7500, 2500], [3, 1]).mismatch
    assert sample_ratio([0, 0], [1, 1]) == sample_ratio([], [])
