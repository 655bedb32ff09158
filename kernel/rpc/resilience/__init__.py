"""The resilience layer every control-plane gRPC hop goes through (issue 4, DESIGN.md §6).

Client side (:class:`ResilienceLayer`, filled into ``kernel.rpc.clients.RpcChannelFactory``):
deadline propagation, retries with jittered backoff and a retry budget, hedging of
read-only calls, a bulkhead and a circuit breaker per dependency, declared
fallbacks, client-side balancing with health checks and outlier ejection.
Server side (:func:`server_interceptors`): traces, adaptive load shedding with
priorities, the inbound deadline as context, fault injection.
Declarations per method live in :data:`POLICIES` (see :mod:`.policy`).
"""

from __future__ import annotations

import grpc

from kernel.config import ResilienceSettings, load
from kernel.rpc.resilience.client import ResilienceConfig, ResilienceLayer, ResilientChannel
from kernel.rpc.resilience.faults import FAULTS, FaultInjector, FaultRule, ProcessKiller
from kernel.rpc.resilience.handlers import Chain, Stage
from kernel.rpc.resilience.inbound import DeadlineServerInterceptor
from kernel.rpc.resilience.limiter import AdaptiveLimiter, Gradient2, QueueWait
from kernel.rpc.resilience.metrics import render as render_metrics
from kernel.rpc.resilience.policy import POLICIES, MethodPolicy, PolicyTable, Priority
from kernel.rpc.resilience.served import ServedMetrics
from kernel.rpc.resilience.shedding import LoadShedder
from kernel.rpc.resilience.tracing import TracingServerInterceptor, setup_tracing

__all__ = [
    "FAULTS",
    "POLICIES",
    "AdaptiveLimiter",
    "Chain",
    "DeadlineServerInterceptor",
    "FaultInjector",
    "FaultRule",
    "Gradient2",
    "LoadShedder",
    "MethodPolicy",
    "PolicyTable",
    "Priority",
    "ProcessKiller",
    "QueueWait",
    "ResilienceConfig",
    "ResilienceLayer",
    "ResilientChannel",
    "Stage",
    "TracingServerInterceptor",
    "render_metrics",
    "server_interceptors",
    "setup_tracing",
]


def server_interceptors(
    limiter: AdaptiveLimiter | None = None,
    faults: FaultInjector | None = None,
    policies: PolicyTable = POLICIES,
    name: str = "server",
    settings: ResilienceSettings | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The layer's server side: one interceptor (a :class:`Chain`, since every
    ``grpc.aio`` interceptor level costs each call) running, outermost first: trace,
    the served calls' metrics, shed, deadline, faults.

    Faults sit innermost so injected latency counts as the service's own (the
    limiter sees it, as it would see a slow database). From ``settings`` (None: loaded
    from the environment): ``load_shedding`` off (``LIVEMESH_LOAD_SHEDDING=off``) leaves
    the limiter out (the overload benchmark's baseline); ``shed_wait_ms``
    (``LIVEMESH_SHED_WAIT_MS``) sets the wait rule's floor (default 25 ms)."""
    if settings is None:
        settings = load(ResilienceSettings).settings
    shedding = settings.load_shedding == "on"
    if limiter is None and settings.shed_wait_ms is not None:
        limiter = AdaptiveLimiter(queue=QueueWait(min_wait_s=settings.shed_wait_ms / 1000))
    return [
        Chain(
            [
                TracingServerInterceptor(),
                ServedMetrics(),
                *([LoadShedder(limiter, policies, name)] if shedding else []),
                DeadlineServerInterceptor(policies),
                faults if faults is not None else FAULTS,
            ]
        )
    ]
