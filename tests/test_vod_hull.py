"""The per-title hull, rung selection and BD-rate on synthetic points (no encoding)."""

from __future__ import annotations

import itertools
import math

import pytest

from live.vod.bdrate import bd_rate
from live.vod.hull import Probe, select_rungs, upper_hull


def p(kbps: float, quality: float, height: int = 360, crf: int = 28) -> Probe:
    return Probe(height=height, crf=crf, kbps=kbps, quality=quality)


def test_hull_keeps_the_upper_envelope_only() -> None:
    points = [
        p(100, 30),
        p(200, 36),
        p(300, 37),  # under the chord 200→400: never best
        p(400, 40),
        p(350, 33),  # dominated: dearer and worse than 200
        p(800, 42),
        p(900, 41),  # worse than a cheaper point
    ]
    assert [(h.kbps, h.quality) for h in upper_hull(points)] == [
        (100, 30),
        (200, 36),
        (400, 40),
        (800, 42),
    ]


def test_hull_is_concave_and_mixes_resolutions() -> None:
    low = [p(k, 20 + 8 * math.log10(k), height=240) for k in (100, 200, 400, 800, 1600)]
    high = [p(k, 14 + 10 * math.log10(k), height=720) for k in (100, 200, 400, 800, 1600)]
    hull = upper_hull(low + high)
    slopes = [(b.quality - a.quality) / (b.kbps - a.kbps) for a, b in itertools.pairwise(hull)]
    assert slopes == sorted(slopes, reverse=True)
    assert hull[0].height == 240 and hull[-1].height == 720


def test_rungs_stop_at_good_enough_quality() -> None:
    hull = [p(100, 35), p(200, 40), p(300, 44), p(500, 46), p(2000, 48)]
    rungs = select_rungs(hull, good_enough=45, step=1.6)
    assert [r.kbps for r in rungs] == [100, 300, 500]


def test_rungs_are_spaced_and_capped() -> None:
    hull = [p(k, 30 + k / 1000) for k in (100, 150, 250, 400, 700, 1200, 2500, 9000)]
    rungs = select_rungs(hull, count=3, good_enough=99, max_kbps=5000, step=2)
    assert [r.kbps for r in rungs] == [400, 1200, 2500]
    assert all(b.kbps >= 2 * a.kbps for a, b in itertools.pairwise(rungs))


def test_rungs_of_an_empty_or_all_too_cheap_hull() -> None:
    assert select_rungs([]) == []
    assert select_rungs([p(20, 40), p(50, 44)], min_kbps=100) == [p(20, 40)]


def test_bd_rate_of_a_uniformly_cheaper_curve() -> None:
    anchor = [(1000.0, 30.0), (2000.0, 35.0), (4000.0, 40.0)]
    test = [(r * 0.6, q) for r, q in anchor]
    assert bd_rate(anchor, test) == pytest.approx(-40.0)
    assert bd_rate(anchor, anchor) == pytest.approx(0.0)
    assert bd_rate(test, anchor) == pytest.approx(100 / 0.6 - 100)


def test_bd_rate_needs_a_shared_quality_range() -> None:
    with pytest.raises(ValueError, match="share no quality"):
        bd_rate([(100, 30), (200, 32)], [(100, 40), (200, 42)])
    with pytest.raises(ValueError, match="two points"):
        bd_rate([(100, 30)], [(100, 30), (200, 32)])


def test_bd_rate_follows_the_curve_between_sparse_points() -> None:
    """Three points and nine of one convex log-rate curve are the same encoder: straight
    chords between the three would lie above the curve and call the nine 3.8 % cheaper."""

    def rate(quality: float) -> float:
        return math.exp(5 + 0.1 * (quality - 30) + 0.01 * (quality - 30) ** 2)

    sparse = [(rate(q), q) for q in (30.0, 35.0, 40.0)]
    dense = [(rate(30 + 1.25 * i), 30 + 1.25 * i) for i in range(9)]
    assert bd_rate(sparse, dense) == pytest.approx(0.0, abs=0.01)


def test_rungs_reach_down_to_the_floor_of_a_hull_that_tops_out_high() -> None:
    """A hard title's top rung is dear: its steps widen so the bottom rung still plays on
    the slowest connection the service serves, evenly spaced in log-rate."""
    hull = [p(k, 20 + 8 * math.log10(k)) for k in (250, 400, 600, 900, 1400, 2200, 3400, 6400)]
    rungs = select_rungs(hull, count=4, good_enough=99, step=1.6, floor_kbps=600)
    assert [r.kbps for r in rungs] == [600, 1400, 3400, 6400]
    # a floor the plain steps reach anyway keeps them; one under the hull's cheapest point
    # widens them only down to that point
    high_floor = select_rungs(hull, count=4, good_enough=99, step=1.6, floor_kbps=3000)
    assert [r.kbps for r in high_floor] == [600, 1400, 3400, 6400]
    low_floor = select_rungs(hull, count=4, good_enough=99, step=1.6, floor_kbps=50)
    assert [r.kbps for r in low_floor] == [250, 900, 2200, 6400]
