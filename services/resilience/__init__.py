"""The resilience layer every control-plane gRPC hop goes through (issue 4, DESIGN.md §6).

Client side (:class:`ResilienceLayer`, filled into ``services.common.clients.ChannelFactory``):
deadline propagation, retries with jittered backoff and a retry budget, hedging of
read-only calls, a bulkhead and a circuit breaker per dependency, declared
fallbacks, client-side balancing with health checks and outlier ejection.
Server side (:func:`server_interceptors`): traces, adaptive load shedding with
priorities, the inbound deadline as context, fault injection.
Declarations per method live in :data:`POLICIES` (see :mod:`.policy`).
"""

from __future__ import annotations

import os

import grpc

from services.resilience.client import ResilienceConfig, ResilienceLayer, ResilientChannel
from services.resilience.faults import FAULTS, FaultInjector, FaultRule, ProcessKiller
from services.resilience.handlers import Chain, Stage
from services.resilience.inbound import DeadlineServerInterceptor
from services.resilience.limiter import AdaptiveLimiter, Gradient2, QueueWait
from services.resilience.metrics import render as render_metrics
from services.resilience.policy import POLICIES, MethodPolicy, PolicyTable, Priority
from services.resilience.shedding import LoadShedder
from services.resilience.tracing import TracingServerInterceptor, setup_tracing

SHED_WAIT_ENV = "LIVEMESH_SHED_WAIT_MS"

__all__ = [
    "FAULTS", "POLICIES", "SHED_WAIT_ENV", "AdaptiveLimiter", "Chain",
    "DeadlineServerInterceptor", "FaultInjector", "FaultRule", "Gradient2", "LoadShedder",
    "MethodPolicy", "PolicyTable", "Priority", "ProcessKiller", "QueueWait", "ResilienceConfig",
    "ResilienceLayer", "ResilientChannel", "Stage", "TracingServerInterceptor", "render_metrics",
    "server_interceptors", "setup_tracing",
]


def server_interceptors(
    limiter: AdaptiveLimiter | None = None, faults: FaultInjector | None = None,
    policies: PolicyTable = POLICIES, name: str = "server",
) -> list[grpc.aio.ServerInterceptor]:
    """The layer's server side: one interceptor (a :class:`Chain`, since every
    ``grpc.aio`` interceptor level costs each call) running, outermost first: trace,
    shed, deadline, faults.

    Faults sit innermost so injected latency counts as the service's own (the
    limiter sees it, as it would see a slow database). ``LIVEMESH_LOAD_SHEDDING=off``
    leaves the limiter out (the overload benchmark's baseline);
    ``LIVEMESH_SHED_WAIT_MS`` sets the wait rule's floor (default 25 ms)."""
    shedding = os.environ.get("LIVEMESH_LOAD_SHEDDING", "on") != "off"
    if limiter is None and SHED_WAIT_ENV in os.environ:
        limiter = AdaptiveLimiter(queue=QueueWait(
            min_wait_s=float(os.environ[SHED_WAIT_ENV]) / 1000))
    return [Chain([
        TracingServerInterceptor(),
        *([LoadShedder(limiter, policies, name)] if shedding else []),
        DeadlineServerInterceptor(policies),
        faults if faults is not None else FAULTS,
    ])]
