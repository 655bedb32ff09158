"""Bjøntegaard delta rate: the average bitrate difference of two encoders at equal quality.

Each curve is log(bitrate) as a function of quality, interpolated with a piecewise cubic
Hermite (PCHIP) curve through its points, and the two are averaged over the quality
range both cover (the integral of their gap divided by its width). PCHIP is the variant
of VCEG-M33 that Netflix's BD-rate calculator (in VMAF's tools) and the AOM/JVET common
test conditions use: VCEG-M33's one cubic polynomial overshoots between few points and
needs four of them, and a three-rung fixed ladder has three; PCHIP passes through every
point, stays monotone between them and follows the curvature that straight chords (which
lie above a convex log-rate curve, the more the wider its points are spread) would miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def bd_rate(anchor: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]]) -> float:
    """Percent bitrate ``test`` needs over ``anchor`` for the same quality (negative: saving).

    Both are ``(kbps, quality)`` points; ValueError when their quality ranges do not
    overlap (nothing to compare at equal quality).
    """
    a_q, a_r = _curve(anchor)
    t_q, t_r = _curve(test)
    low, high = max(a_q[0], t_q[0]), min(a_q[-1], t_q[-1])
    if high <= low:
        raise ValueError("the curves share no quality range")
    gap = _integral(t_q, t_r, low, high) - _integral(a_q, a_r, low, high)
    return (float(np.exp(gap / (high - low))) - 1.0) * 100.0


def _integral(quality: np.ndarray, log_rate: np.ndarray, low: float, high: float) -> float:
    """The integral of the curve's log-rate over [low, high] (inside its quality range)."""
    return float(PchipInterpolator(quality, log_rate).integrate(low, high))


def _curve(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Quality (strictly ascending) and log-rate arrays of a rising curve.

    Where more quality came cheaper, the dearer point is not on the curve (an encoder
    would use the cheaper one), and of points with equal quality the cheapest counts.
    """
    best: dict[float, float] = {}
    for rate, level in points:
        best[level] = min(rate, best.get(level, rate))
    if len(best) < 2:
        raise ValueError("a rate-quality curve needs at least two points")
    ordered = sorted(best)
    quality = np.array(ordered, dtype=float)
    log_rate = np.log(np.array([best[q] for q in ordered], dtype=float))
    log_rate = np.minimum.accumulate(log_rate[::-1])[::-1]
    return quality, log_rate
