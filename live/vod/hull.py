"""The per-title ladder as pure arithmetic: the rate-quality convex hull and its rungs.

A title is probe-encoded over a grid of (resolution, CRF); each probe gives a point
(bitrate, quality at display resolution).  For any bitrate, the best encode lies on
the upper convex hull of those points; a ladder is a few points picked along it
(DESIGN.md §2: the per-title hull is pure logic, tested without encoding).

Rungs are picked from the top down: the top is the cheapest hull point that reaches
``good_enough`` quality (bits beyond it buy nothing a viewer sees, which is where a
simple title saves), or the best point within the bitrate cap. Below the top the rungs
are the hull points nearest to even steps in log-rate, each at least ``step`` times
cheaper than the one above (so a player has distinct choices), the steps widened as far
as the ladder needs to reach ``floor_kbps`` with its ``count`` rungs; the bottom rung is
the best point at or under its step: a title ladder serves
every connection the service serves (the fixed ladder's lowest rung, 600 kb/s), so a
title whose hull tops out high does not leave a viewer on a slower link with nothing to
play.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GOOD_ENOUGH_DB = 45.0
MAX_KBPS = 8000.0
FLOOR_KBPS = 600.0  # the slowest connection the service plays on: the fixed ladder's bottom


@dataclass(frozen=True)
class Probe:
    """One trial encode: where it sits in the grid and what it achieved."""

    height: int
    crf: int
    kbps: float
    quality: float  # dB (XPSNR of luma against the source at display resolution)


def _cross(o: Probe, a: Probe, b: Probe) -> float:
    return (a.kbps - o.kbps) * (b.quality - o.quality) - (a.quality - o.quality) * (b.kbps - o.kbps)


def upper_hull(points: Iterable[Probe]) -> list[Probe]:
    """The points on the upper convex hull, cheapest first, quality strictly rising.

    Andrew's monotone chain over bitrate; points past the best quality are dropped,
    since spending more bits for less quality is never a rung.
    """
    hull: list[Probe] = []
    for point in sorted(points, key=lambda p: (p.kbps, -p.quality)):
        if hull and point.quality <= hull[-1].quality:
            continue  # no better than something cheaper
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) >= 0:
            hull.pop()  # hull[-1] lies on or below the chord: never the best at any rate
        hull.append(point)
    return hull


def select_rungs(
    hull: Sequence[Probe],
    *,
    count: int = 4,
    good_enough: float = GOOD_ENOUGH_DB,
    max_kbps: float = MAX_KBPS,
    min_kbps: float = 50.0,
    step: float = 1.6,
    floor_kbps: float = FLOOR_KBPS,
) -> list[Probe]:
    """Up to ``count`` rungs along ``hull`` (from :func:`upper_hull`), cheapest first."""
    affordable = [p for p in hull if min_kbps <= p.kbps <= max_kbps]
    if not affordable:
        affordable = [min(hull, key=lambda p: p.kbps)] if hull else []
    if not affordable:
        return []
    top = next((p for p in affordable if p.quality >= good_enough), affordable[-1])
    # even steps in log-rate, wide enough that ``count`` rungs reach the floor (or the
    # hull's cheapest point)
    bottom = max(floor_kbps, affordable[0].kbps)
    spread = max(step, (top.kbps / bottom) ** (1 / max(1, count - 1)))
    rungs = [top]
    for index in range(1, count):
        target = top.kbps / spread**index
        cheaper = [p for p in affordable if p.kbps * step <= rungs[-1].kbps]
        if not cheaper:
            break
        if index < count - 1:
            rungs.append(min(cheaper, key=lambda p: abs(math.log(p.kbps / target))))
        else:  # the bottom rung plays at the floor: the best point at or under it
            under = [p for p in cheaper if p.kbps <= max(target, bottom)]  # (rounding)
            rungs.append(under[-1] if under else cheaper[0])
    return rungs[::-1]
