"""``livemesh loadtest run smoke`` against the real stack on loopback: a few hundred players,
a flash crowd and the busiest edge killed mid-run (loadrig/profiles/smoke.toml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_smoke_profile_players_fail_over_and_the_origin_sees_each_object_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # its own embedded Redis
    # the profile's devices play v480 and v360 only: encoding 720p too would just take CPU
    # from the players and the stack, which share this machine's two cores
    env["LIVEMESH_RUNGS"] = "v480,v360"
    run = subprocess.run(
        [sys.executable, "-m", "livemesh.cli", "loadtest", "run", "smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    s = results["summary"]
    detail = f"{s}\n{run.stdout[-1500:]}"

    # the profile ran: a flash crowd on top of a ramp, the busiest edge killed
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
    assert page.count("data:image/png;base64,") == 3
    assert len(results["metrics"]["origin_requests"]) >= 10
    assert "edges = ceil(65,000,000" in results["scale"]
