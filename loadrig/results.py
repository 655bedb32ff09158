"""Aggregation of a run into the results document (pure: records in, figures out)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kernel.stats import spread
from loadrig.player_record import STARTUP_STEPS


def integral(series: Sequence[tuple[float, float]]) -> float:
    """The area under a step series of ``(t, value)`` points."""
    return sum(v0 * (t1 - t0) for (t0, v0), (t1, _v1) in itertools.pairwise(series))


def rate_between(series: Sequence[tuple[float, float]]) -> float:
    """Increase of a counter series from its first to its last point."""
    return series[-1][1] - series[0][1] if len(series) > 1 else 0.0


def summarise(
    players: list[dict[str, Any]],
    series: list[dict[str, Any]],
    origin_per_object: dict[str, int],
    metrics: dict[str, Any],
    loop_lag_ms: Sequence[float] = (),
) -> dict[str, Any]:
    started = [p for p in players if p["startup_s"] is not None]
    stalls = [s for p in players for s in p["stalls"]]
    errors: Counter[str] = Counter()
    rungs: Counter[str] = Counter()
    for p in players:
        errors.update(p["errors"])
        rungs.update(p["rungs"])
    failed_over = [p for p in players if p["failovers"]]
    over_buffer = [p for p in players if p["stalls"] and max(p["stalls"]) > p["buffer_target_s"]]
    counts = list(origin_per_object.values())
    viewer_s = integral([(row["t"], row["viewers"]) for row in series])
    capacity = measured_capacity(metrics, viewer_s)
    return {
        "players": len(players),
        "peak_viewers": max((row["viewers"] for row in series), default=0),
        "started": len(started),
        "never_started": len(players) - len(started),
        "failed": sum(p["state"] == "failed" for p in players),
        "startup_s": spread([p["startup_s"] for p in started]),
        "startup_parts_s": startup_breakdown(started),
        "latency_s": spread([x for p in players for x in p["latency_s"]]),
        "delivery_ms": spread([x for p in players for x in p["delivery_ms"]]),
        "ttfb_ms": spread([x for p in players for x in p["ttfb_ms"]]),
        "stalls": {
            "count": len(stalls),
            "players_with_stalls": sum(bool(p["stalls"]) for p in players),
            "total_s": round(sum(stalls), 3),
            "longest_s": round(max(stalls, default=0.0), 3),
            "longer_than_buffer": len(over_buffer),
        },
        "failovers": {
            "players": len(failed_over),
            "total": sum(p["failovers"] for p in players),
            "then_played": sum(p["state"] != "failed" for p in failed_over),
            # from the failure to the first chunk from the next edge
            "gap_s": spread([g for p in players for g in p.get("failover_gaps", [])]),
            # how long the player had been stalled when that chunk came (0: none)
            "stall_s": spread([g for p in players for g in p.get("failover_stalls", [])]),
            "stalls_longer_than_buffer": sum(
                any(g > p["buffer_target_s"] for g in p.get("failover_stalls", [])) for p in players
            ),
        },
        "switches": sum(p["switches"] for p in players),
        "rung_segments": dict(rungs),
        "errors": dict(errors.most_common()),
        "bytes": sum(p["bytes"] for p in players),
        "origin_per_object": {
            "objects": len(counts),
            "max": max(counts, default=0),
            "mean": round(sum(counts) / len(counts), 3) if counts else 0.0,
            "histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
        },
        "viewer_seconds": round(viewer_s, 1),
        "capacity": capacity,
        "rig": rig_check(loop_lag_ms),
    }


def startup_breakdown(started: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The startup time by cause (press-play wait, MPD, init, first segment): each step's
    spread over the viewers that started (records without a breakdown are left out)."""
    parts = [p["startup_parts"] for p in started if p.get("startup_parts")]
    return {step: spread([p[step] for p in parts]) for step in STARTUP_STEPS}


# A worker loop later than this delays what its viewers record by as much: the figures
# then show the rig's lateness along with the system's.
RIG_LAG_WARN_MS = 100.0


def rig_check(loop_lag_ms: Sequence[float]) -> dict[str, Any]:
    """How late the workers' loops woke over the run, and whether that taints the figures."""
    lag = spread(loop_lag_ms)
    late = sum(x > RIG_LAG_WARN_MS for x in loop_lag_ms)
    return {
        "loop_lag_ms": lag,
        "late_share": round(late / len(loop_lag_ms), 4) if loop_lag_ms else 0.0,
        "trustworthy": not loop_lag_ms or lag["p99"] <= RIG_LAG_WARN_MS,
    }


def measured_capacity(metrics: dict[str, Any], viewer_s: float) -> dict[str, float]:
    """Viewers per edge core and shield requests per core, from this run's CPU figures."""
    nodes = metrics.get("nodes", [])
    cpu = metrics.get("cpu_seconds", {})
    edge_cpu = sum(rate_between(cpu.get(n["name"], [])) for n in nodes if n["kind"] == "edge")
    shield_cpu = sum(rate_between(cpu.get(n["name"], [])) for n in nodes if n["kind"] == "shield")
    shield_req = sum(
        rate_between(metrics.get("node_requests", {}).get(n["name"], []))
        for n in nodes
        if n["kind"] == "shield"
    )
    return {
        "edge_cpu_s": round(edge_cpu, 2),
        "edge_viewers_per_core": round(viewer_s / edge_cpu, 1) if edge_cpu > 0 else 0.0,
        "shield_cpu_s": round(shield_cpu, 2),
        "shield_requests_per_core": round(shield_req / shield_cpu, 1) if shield_cpu > 0 else 0.0,
    }
