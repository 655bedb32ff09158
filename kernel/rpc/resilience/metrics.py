"""The layer's metrics, in the Prometheus text format (``render()``).

One registry of its own, so a process exposes exactly these (and tests read them). A
group of workers (:mod:`kernel.workers`) keeps them in prometheus_client's multiprocess
mode, and each worker exposes the whole group's (:func:`exposed`).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from kernel.workers import METRICS_DIR_ENV

REGISTRY = CollectorRegistry(auto_describe=True)

ATTEMPTS = Counter(
    "livemesh_rpc_attempts",
    "Outbound attempts (first tries, retries and hedges) by outcome",
    ["dependency", "method", "code"],
    registry=REGISTRY,
)
CALLS = Counter(
    "livemesh_rpc_calls",
    "Outbound logical calls by final status code",
    ["dependency", "method", "code"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "livemesh_rpc_retries",
    "Retries sent",
    ["dependency", "method"],
    registry=REGISTRY,
)
HEDGES = Counter(
    "livemesh_rpc_hedges",
    "Hedged second attempts sent",
    ["dependency", "method"],
    registry=REGISTRY,
)
BUDGET_EXHAUSTED = Counter(
    "livemesh_retry_budget_exhausted",
    "Retries or hedges refused by the retry budget",
    ["dependency"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "livemesh_breaker_state",
    "Circuit breaker state (0 closed, 1 half-open, 2 open)",
    ["dependency"],
    registry=REGISTRY,
    multiprocess_mode="max",  # of a group's workers (each has its breakers): the worst
)
BREAKER_REJECTED = Counter(
    "livemesh_breaker_rejected",
    "Calls refused by an open breaker",
    ["dependency"],
    registry=REGISTRY,
)
BULKHEAD_REJECTED = Counter(
    "livemesh_bulkhead_rejected",
    "Calls refused by a full bulkhead",
    ["dependency"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "livemesh_fallbacks",
    "Calls answered by their declared fallback",
    ["dependency", "method"],
    registry=REGISTRY,
)
SHED = Counter(
    "livemesh_shed_calls",
    "Inbound calls rejected by the adaptive concurrency limit",
    ["method", "priority"],
    registry=REGISTRY,
)
LIMIT = Gauge(
    "livemesh_concurrency_limit",
    "The adaptive concurrency limit",
    ["server"],
    registry=REGISTRY,
    multiprocess_mode="sum",  # of a group's workers: what the port takes
)
EJECTIONS = Counter(
    "livemesh_outlier_ejections",
    "Instances ejected as outliers",
    ["dependency"],
    registry=REGISTRY,
)
SERVED = Counter(
    "livemesh_rpc_served",
    "Inbound calls by final status code (shed calls too: RESOURCE_EXHAUSTED)",
    ["method", "code"],
    registry=REGISTRY,
)
SERVED_SECONDS = Histogram(
    "livemesh_rpc_served_seconds",
    "Inbound calls' time in the server, from the layer's first stage to the last reply",
    ["method"],
    # a hop of the control plane answers in a millisecond or less: the default buckets
    # (from 5 ms) would put every call in the first one
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)


_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once: ``labels()`` takes a lock and builds a
    key on every call, which the per-call path should not pay."""
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


_exposed: list[CollectorRegistry] = []


def exposed() -> CollectorRegistry:
    """The registry /metrics tells: :data:`REGISTRY`, or in a group of workers one that
    collects every worker's figures from their files, summed (prometheus_client's
    multiprocess mode; a gauge as its ``multiprocess_mode`` says)."""
    if not _exposed:
        path = os.environ.get(METRICS_DIR_ENV)
        if path is None:
            _exposed.append(REGISTRY)
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
            _exposed.append(registry)
    return _exposed[0]


def render() -> bytes:
    """All of the layer's metrics in the Prometheus text exposition format."""
    return generate_latest(exposed())
