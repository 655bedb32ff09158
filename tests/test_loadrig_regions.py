"""loadrig/regions.py: the scale model across active-active regions, each sized for the
loss of another; checked by hand, and run as ``livemesh loadtest scale``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadrig.regions import plan_regions, worst_shares
from loadrig.scale import Capacity, EventShape

ROOT = Path(__file__).resolve().parent.parent
# the hand-checked case of test_loadrig_logic.py: 6,250 viewers per edge, 40 edges per
# shield, 2.5 req/s from each shield to the origin, 25 % headroom
EVENT = EventShape(
    viewers=1_000_000,
    ladder={"v2": 2_000_000, "v1": 1_000_000, "a": 100_000},
    mix={"v2": 0.5, "v1": 0.5},
)
CAP = Capacity(
    edge_viewers_per_core=1000, edge_cores=10, edge_egress_bps=10e9,
    shield_requests_per_core=100, shield_cores=1, shield_egress_bps=31e9,
    headroom=0.25, regions=7,
)  # fmt: skip


def test_each_region_carries_its_share_of_the_largest_lost_region() -> None:
    worst = worst_shares({"a": 0.5, "b": 0.3, "c": 0.2}, failover=True)
    assert worst["a"] == (pytest.approx(0.5 / 0.7), "b")
    assert worst["b"] == (pytest.approx(0.6), "a")
    assert worst["c"] == (pytest.approx(0.4), "a")


def test_regions_are_sized_for_their_worst_load_by_hand() -> None:
    plans = {p.name: p for p in plan_regions(EVENT, CAP, {"a": 0.5, "b": 0.3, "c": 0.2})}
    a, b, c = plans["a"], plans["b"], plans["c"]
    assert (a.viewers, a.worst_viewers) == (500_000, 714_286)
    assert a.plan.edges == 143  # ceil(714,286 / 6,250 * 1.25 = 142.86)
    assert a.plan.shields == 5  # ceil(143 / 40 * 1.25 = 4.47): the regions floor is global
    assert a.plan.origin_requests_per_s == 12.5  # its own origin: 5 shields * 2.5
    assert (b.plan.edges, b.plan.shields) == (120, 4)  # 600,000 / 6,250 * 1.25; 3.75
    assert (c.plan.edges, c.plan.shields) == (80, 3)  # 400,000 / 6,250 * 1.25; 2.5
    alone = plan_regions(EVENT, CAP, {"a": 0.5, "b": 0.5}, failover=False)
    assert [(p.worst_viewers, p.lost, p.plan.edges) for p in alone] == [
        (500_000, None, 100),
        (500_000, None, 100),
    ]


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        worst_shares({"a": 0.5, "b": 0.4}, failover=True)
    with pytest.raises(ValueError, match="positive"):
        worst_shares({"a": 1.2, "b": -0.2}, failover=True)
    with pytest.raises(ValueError, match="two regions or more"):
        worst_shares({"a": 1.0}, failover=True)


def test_loadtest_scale_prints_each_region() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "command.cli", "loadtest", "scale",
         "--region-share", "eu-west=0.6,us-east=0.4", "--json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "eu-west: 60% = 39,000,000 viewers; 65,000,000 after us-east is lost" in done.stdout
    regions = json.loads(done.stdout.splitlines()[-1])["regions"]
    assert [r["name"] for r in regions] == ["eu-west", "us-east"]
    assert all(r["worst_viewers"] == 65_000_000 for r in regions)
