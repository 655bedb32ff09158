"""What a dependency keeps per method of it, shared by the dependency and its attempts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kernel.rpc.resilience import metrics, tracing
from kernel.rpc.resilience.balancer import Connection
from kernel.rpc.resilience.latency import LatencyTracker

OnEndpoint = Callable[[Connection], Any]  # the method's multi-callable on one connection


class Method:
    """What a dependency keeps per method, found with one look-up per call: its span's
    name and attributes, its latencies (the hedge's p95), and the labelled metric
    children of its common outcomes (``labels()`` takes a lock and builds a key)."""

    def __init__(self, name: str, dependency: str) -> None:
        self.name = name
        self.span_name, self.span_attributes = tracing.client_names(name, dependency)
        self.latency = LatencyTracker()
        self.calls_ok = metrics.CALLS.labels(dependency, name, "OK")
        self.attempts_ok = metrics.ATTEMPTS.labels(dependency, name, "OK")
