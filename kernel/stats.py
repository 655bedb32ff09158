"""Order statistics of measured samples: the one definition of a percentile.

Nearest rank (the smallest sample with at least ``q`` of the samples at or below it)
is the definition used everywhere: the load rig's reports, every bench's figures and
the resilience layer's hedging p95.  It always answers a value that was observed (a
p99 of latencies is a latency some request had, not a blend of two), it needs no
assumption about the distribution between samples, and ``q = 1`` is the maximum.
numpy's default (linear interpolation) answers values never measured and, on the
few samples of a short run, drifts from the nearest rank by up to a whole gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def rank_of(count: int, q: float) -> int:
    """The 0-based index of the ``q`` (0..1) nearest-rank percentile among ``count`` sorted
    samples (``count`` > 0)."""
    return min(count - 1, max(0, math.ceil(q * count) - 1))


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values``; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[rank_of(len(ordered), q)]


def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Count, p50, p90, p99 and max of ``values`` times ``scale`` (3 decimals; NaN for none)."""
    out: dict[str, float] = {"count": float(len(values))}
    ordered = sorted(values)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        out[name] = round(ordered[rank_of(len(ordered), q)] * scale, 3) if ordered else math.nan
    return out


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """The benches' figure of a sample of milliseconds: count, p50, p99 and max (2 decimals)."""
    if not values:
        return {"count": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    ordered = sorted(values)
    n = len(ordered)
    return {
        "count": n,
        "p50_ms": round(ordered[rank_of(n, 0.5)], 2),
        "p99_ms": round(ordered[rank_of(n, 0.99)], 2),
        "max_ms": round(ordered[-1], 2),
    }
