"""Bjøntegaard delta rate: the average bitrate difference of two encoders at equal quality.

Each curve is log(bitrate) as a function of quality, interpolated piecewise linearly
(the variant of VCEG-M33 that does not overshoot with few points, as a three-rung
ladder has) and averaged over the quality range both curves cover.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAMPLES = 200


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
    grid = np.linspace(low, high, SAMPLES)
    mean_gap = float(np.mean(np.interp(grid, t_q, t_r) - np.interp(grid, a_q, a_r)))
    return (float(np.exp(mean_gap)) - 1.0) * 100.0


def _curve(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Quality (ascending) and log-rate arrays, keeping the cheapest point per quality."""
    ordered = sorted(points, key=lambda p: (p[1], p[0]))
    if len(ordered) < 2:
        raise ValueError("a rate-quality curve needs at least two points")
    quality = np.array([q for _r, q in ordered], dtype=float)
    log_rate = np.log(np.array([r for r, _q in ordered], dtype=float))
    # a rising curve: where more quality came cheaper, the dearer point is not on it
    log_rate = np.minimum.accumulate(log_rate[::-1])[::-1]
    return quality, log_rate
