"""The one percentile: nearest rank, pinned on known values."""

from __future__ import annotations

import math

from kernel.stats import percentile, rank_of, spread, summary_ms


def test_percentile_is_the_nearest_rank() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # the textbook example of the nearest rank
    assert percentile(values, 0.05) == 15
    assert percentile(values, 0.3) == 20
    assert percentile(values, 0.4) == 20
    assert percentile(values, 0.5) == 35
    assert percentile(values, 1.0) == 50
    assert percentile(list(reversed(values)), 0.5) == 35  # order of arrival does not matter


def test_a_p99_of_a_hundred_is_the_ninety_ninth_not_the_maximum() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.5) == 50  # not 50.5, the interpolated median
    assert percentile([1.0, 2.0], 0.5) == 1  # an observed value, never a blend


def test_edges() -> None:
    assert math.isnan(percentile([], 0.5))
    assert percentile([7.0], 0.0) == percentile([7.0], 1.0) == 7
    assert rank_of(10, 0.0) == 0 and rank_of(10, 1.0) == 9


def test_summaries_use_the_same_definition() -> None:
    values = [float(v) for v in range(1, 101)]
    assert spread(values) == {"count": 100.0, "p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert summary_ms(values) == {"count": 100, "p50_ms": 50, "p99_ms": 99, "max_ms": 100}
    assert math.isnan(summary_ms([])["p99_ms"]) and math.isnan(spread([])["p50"])
