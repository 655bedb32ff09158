"""The readout's statistics: intervals for a proportion and a mean, a difference of
means (Welch), and Pearson's chi-square for a sample-ratio mismatch.

Figures arrive as sums (counts, totals, totals of squares), never as raw samples, so
the intervals are computed from those sums here; scipy supplies the distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
SRM_ALPHA = 0.001  # the usual SRM threshold: a mismatch this unlikely means a broken pipe
Z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def wilson(successes: int, trials: int) -> Interval:
    """A proportion with its Wilson score interval (sound near 0 and 1, unlike Wald's)."""
    if trials <= 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / trials
    centre = (p + Z * Z / (2 * trials)) / (1 + Z * Z / trials)
    half = Z * math.sqrt(p * (1 - p) / trials + Z * Z / (4 * trials * trials))
    half /= 1 + Z * Z / trials
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def proportion_delta(a: tuple[int, int], b: tuple[int, int]) -> Interval:
    """``b``'s proportion minus ``a``'s (each (successes, trials)), Newcombe's interval
    from the two Wilson intervals."""
    pa, pb = wilson(*a), wilson(*b)
    delta = pb.value - pa.value
    low = delta - math.sqrt((pb.value - pb.low) ** 2 + (pa.high - pa.value) ** 2)
    high = delta + math.sqrt((pb.high - pb.value) ** 2 + (pa.value - pa.low) ** 2)
    return Interval(delta, low, high)


@dataclass(frozen=True)
class Moments:
    """A sample as its sums: n, Σx, Σx²."""

    n: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 below two observations)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


def mean_interval(m: Moments) -> Interval:
    """The mean with Student's t interval."""
    if m.n < 2:
        return Interval(m.mean, -math.inf, math.inf)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, m.n - 1)) * math.sqrt(m.variance / m.n)
    return Interval(m.mean, m.mean - half, m.mean + half)


def welch_delta(a: Moments, b: Moments) -> Interval:
    """``b``'s mean minus ``a``'s with Welch's interval (unequal variances,
    Welch-Satterthwaite degrees of freedom)."""
    delta = b.mean - a.mean
    if a.n < 2 or b.n < 2:
        return Interval(delta, -math.inf, math.inf)
    va, vb = a.variance / a.n, b.variance / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(delta, delta, delta)
    df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    return Interval(delta, delta - half, delta + half)


@dataclass(frozen=True)
class SampleRatio:
    chi_square: float
    p_value: float
    mismatch: bool


def sample_ratio(observed: Sequence[int], weights: Sequence[int]) -> SampleRatio:
    """Pearson's chi-square of ``observed`` units per cell against the shares ``weights``
    promise; a mismatch below :data:`SRM_ALPHA`."""
    n = sum(observed)
    if n == 0:
        return SampleRatio(0.0, 1.0, False)
    total = sum(weights)
    expected = [n * w / total for w in weights]
    chi, p = stats.chisquare(observed, expected)
    return SampleRatio(float(chi), float(p), bool(p < SRM_ALPHA))
