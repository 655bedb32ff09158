"""The console's read and admin routes through the real gateway: the edges with their health,
load and QoE windows (playback's ListEdges over the registry and the QoE processor's sums),
and the experiments (define, start, read out, stop). Only an operator gets them: a viewer is
refused with a reason (403), an anonymous caller asked who it is (401); bad input is a 400
naming the field."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from kernel.keys import qoe_health
from services.qoe.consumer import WINDOWS_KEPT
from services.qoe.health import Health
from tests.services import test_gateway
from tests.services.test_gateway import Stack
from tests.test_qoe import WINDOW, add, consumer, drain, event

stack = test_gateway.stack  # the running stack of test_gateway, for these tests too

OperatorAuth = tuple[tuple[str, str], ...]
# an experiment as `livemesh experiments create` (README) defines it
LIVE_DELAY = {
    "experimentId": "live-delay-1",
    "experiment": {
        "displayName": "Live delay",
        "decision": "live-delay",
        "cells": [
            {"name": "control", "weight": 1, "value": "1000"},
            {"name": "fast", "weight": 1, "value": "500"},
        ],
    },
}


async def _viewer(stack: Stack) -> str:
    _, up = await stack.call(
        "POST", "/v1/accounts:signUp", {"email": "v@example.org", "password": "long enough"}
    )
    token: str = up["accessToken"]
    return token


async def _windows_scored(redis: aioredis.Redis) -> int:
    """Players' events through ``edge-eu`` in the last two whole windows, counted by the
    real consumer and scored by the real health writer: the newest window's start."""
    health = Health(redis, WINDOW, CollectorRegistry())
    last = health.last_window()
    before, now = (last - WINDOW) * 1000 + 1, last * 1000 + 1
    events = [event(before, edge="edge-eu", br=500) for _ in range(5)]
    events += [event(now, edge="edge-eu", bs=True, su=True, ttfb_ms=300)]
    events += [event(now, edge="edge-eu") for _ in range(3)]
    await add(redis, events)
    c = consumer(redis, "console-test")
    await c.ensure_group()
    await drain(c)
    await health.update()
    return last


async def test_edges_show_health_load_and_qoe_windows_to_an_operator_only(
    stack: Stack, operator_auth: OperatorAuth
) -> None:
    operator = operator_auth[0][1].removeprefix("Bearer ")
    status, refused = await stack.call("GET", "/v1/edges")
    assert status == 401 and "bearer" in refused["error"]["message"]
    status, refused = await stack.call("GET", "/v1/edges", token=await _viewer(stack))
    assert status == 403 and "operator" in refused["error"]["message"], refused

    status, listed = await stack.call("GET", "/v1/edges", token=operator)
    assert status == 200, listed
    (edge,) = listed["edges"]
    assert edge["instance"]["name"] == "instances/edge-eu"
    assert edge["instance"]["health"] == "HEALTH_SERVING"
    assert 0 <= edge["instance"].get("load", 0) <= 1
    assert edge["qoeState"] == "QOE_STATE_HEALTHY" and "qoeWindows" not in edge  # none yet

    last = await _windows_scored(stack.state)
    status, listed = await stack.call("GET", "/v1/edges", token=operator)
    assert status == 200, listed
    older, newest = listed["edges"][0]["qoeWindows"]  # oldest first
    assert older["requests"] == "5" and older["bitrateKbps"] == 500
    assert older["score"] == 1 and "rebufferRatio" not in older  # proto3 JSON: 0 left out
    assert newest["requests"] == "4" and newest["rebufferRatio"] == 0.25
    assert newest["startupMs"] == 300 and newest["seconds"] == WINDOW
    assert newest["score"] == pytest.approx(1 - 3 * 0.25 - 300 / 1e4)
    assert newest["startTime"].startswith("20") and last > 0
    # the players left: the edge's health record expires, its windows are still shown
    await stack.state.delete(qoe_health("edge-eu"))
    status, listed = await stack.call("GET", "/v1/edges", token=operator)
    assert [w["requests"] for w in listed["edges"][0]["qoeWindows"]] == ["5", "4"]
    assert WINDOWS_KEPT * WINDOW >= 300  # the chart's five minutes are kept


async def test_experiments_are_defined_run_and_read_out_by_an_operator_only(
    stack: Stack, operator_auth: OperatorAuth
) -> None:
    operator = operator_auth[0][1].removeprefix("Bearer ")
    definition = LIVE_DELAY
    status, refused = await stack.call("POST", "/v1/experiments", definition)
    assert status == 401
    viewer = await _viewer(stack)
    for method, path in (
        ("POST", "/v1/experiments"),
        ("GET", "/v1/experiments"),
        ("GET", "/v1/experiments/live-delay-1/readout"),
        ("POST", "/v1/experiments/live-delay-1:start"),
    ):
        body = definition if path == "/v1/experiments" and method == "POST" else None
        status, refused = await stack.call(method, path, body, viewer)
        assert status == 403 and "operator" in refused["error"]["message"], (path, refused)

    bad = {**definition, "experimentId": "Not An Id"}
    status, refused = await stack.call("POST", "/v1/experiments", bad, operator)
    assert status == 400 and refused["error"]["field"] == "experimentId", refused
    status, made = await stack.call("POST", "/v1/experiments", definition, operator)
    assert status == 200 and made["experiment"]["state"] == "EXPERIMENT_STATE_DRAFT", made
    status, started = await stack.call("POST", "/v1/experiments/live-delay-1:start", {}, operator)
    assert status == 200 and started["experiment"]["state"] == "EXPERIMENT_STATE_RUNNING"
    status, listed = await stack.call("GET", "/v1/experiments?pageSize=10", token=operator)
    assert [e["name"] for e in listed["experiments"]] == ["experiments/live-delay-1"]

    status, readout = await stack.call(
        "GET", "/v1/experiments/live-delay-1/readout", token=operator
    )
    assert status == 200, readout
    assert [c["cell"] for c in readout["cells"]] == ["control", "fast"]
    assert readout["cells"][1]["expectedShare"] == 0.5
    assert readout["sampleRatio"].get("mismatch", False) is False
    status, missing = await stack.call("GET", "/v1/experiments/nope/readout", token=operator)
    assert status == 404, missing

    status, refused = await stack.call("POST", "/v1/experiments/live-delay-1:stop", {}, operator)
    assert status == 400 and refused["error"]["field"] == "reason", refused
    status, stopped = await stack.call(
        "POST", "/v1/experiments/live-delay-1:stop", {"reason": "enough"}, operator
    )
    assert status == 200 and stopped["experiment"]["state"] == "EXPERIMENT_STATE_STOPPED"
    assert stopped["experiment"]["stopReason"] == "operator: enough"
