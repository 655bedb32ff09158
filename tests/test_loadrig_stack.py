"""``livemesh loadtest run smoke`` against the real stack on loopback: a few hundred players,
a flash crowd and the busiest edge killed mid-run (loadrig/scenarios/smoke.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack_helpers import run_loadtest


@pytest.mark.timeout(240)
def test_smoke_scenario_players_fail_over_and_the_origin_sees_each_object_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    results = run_loadtest("smoke", out, timeout_s=220)
    s = results["summary"]
    detail = f"{s}\n{results['stdout'][-1500:]}"

    # the scenario ran: a flash crowd on top of a ramp, the busiest edge killed
    assert s["peak_viewers"] >= 250, detail
    kill = [e for e in results["chaos"] if e["action"] == "kill"]
    assert kill and kill[0]["target"] == "busiest-edge" and "SIGKILL" in kill[0]["detail"], detail

    # viewers played: nearly all started, none gave up
    assert s["started"] >= 0.9 * s["players"], detail
    assert s["failed"] == 0, detail
    # the viewers on the killed edge moved to the next edge they were given and played on...
    assert s["failovers"]["players"] > 0, detail
    assert s["failovers"]["then_played"] == s["failovers"]["players"], detail
    # ...with no stall longer than their buffer (the live delay behind the edge): the next
    # edge's first chunk came within the buffer, and nobody had stalled longer by then
    buffer = results["players"][0]["buffer_target_s"]
    assert s["failovers"]["gap_s"]["max"] < buffer, detail
    assert s["failovers"]["stall_s"]["max"] < buffer, detail
    assert s["failovers"]["stalls_longer_than_buffer"] == 0, detail
    assert s["latency_s"]["p50"] < buffer + 2.0, detail  # near the live delay it aims for

    # one origin request per object (one shield), whatever the crowd and the failover
    per_object = s["origin_per_object"]
    assert per_object["objects"] >= 10, detail
    assert per_object["max"] == 1, detail

    # the report: plots, metrics over time, the scale model from measured capacity
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # with the startup-by-cause CDF
    assert (out / "startup_cdf.png").stat().st_size > 0
    # startup by cause: every viewer that started has its four parts, adding up to it
    started = [p for p in results["players"] if p["startup_s"] is not None]
    assert s["startup_parts_s"]["press"]["count"] == len(started), detail
    for p in started:
        assert sum(p["startup_parts"].values()) == pytest.approx(p["startup_s"], abs=0.01)
    assert "by cause (p50 / p99 s): press-play wait" in results["stdout"], detail
    assert len(results["metrics"]["origin_requests"]) >= 10
    assert "edges = ceil(65,000,000" in results["scale"]
