"""Server-side load shedding: the adaptive concurrency limit as a server interceptor.

A unary call over the limit for its priority is answered RESOURCE_EXHAUSTED at
once (it never queues). Its priority is the higher of its method's declared one
and the ``livemesh-priority`` it carries, so every hop made for a
``StartPlayback`` is shed as late as ``StartPlayback`` itself. Streams are not
counted (they are long-lived and idle).

A call that says with what timeout it was sent (``livemesh-timeout-us``, which the
client layer adds to every attempt) also tells how long it waited before its handler
(sent minus ``time_remaining()``): the limiter's wait rule sheds on that, which is
what sees calls queued in front of a busy event loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from services.resilience import metrics
from services.resilience.context import priority_from, sent_timeout_from
from services.resilience.handlers import Unary, method_of, wrap
from services.resilience.limiter import AdaptiveLimiter
from services.resilience.policy import POLICIES, PolicyTable


class LoadShedder(grpc.aio.ServerInterceptor):
    def __init__(
        self, limiter: AdaptiveLimiter | None = None, policies: PolicyTable = POLICIES,
        name: str = "server",
    ) -> None:
        self.limiter = limiter or AdaptiveLimiter()
        self.policies = policies
        self.name = name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = method_of(handler_call_details)
        if method.startswith("/grpc."):  # health and reflection are never shed
            return handler
        sent = priority_from(handler_call_details.invocation_metadata)
        declared = self.policies.policy(method).priority
        prio = declared if sent is None else min(sent, declared)
        sent_timeout = sent_timeout_from(handler_call_details.invocation_metadata)
        limiter = self.limiter
        limit_gauge = metrics.child(metrics.LIMIT, self.name)

        def unary(behaviour: Unary) -> Unary:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
                waited = None
                if sent_timeout is not None:
                    remaining = ctx.time_remaining()
                    if remaining is not None:
                        waited = max(0.0, sent_timeout - remaining)
                if not limiter.try_acquire(prio, waited):
                    metrics.child(metrics.SHED, method, prio.name).inc()
                    why = (f"queued {waited * 1000:.0f} ms" if limiter.queue.shedding
                           and waited is not None and waited > limiter.queue.target_s()
                           else f"concurrency limit {limiter.limit:.0f}")
                    await ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: {why}")
                start = time.monotonic()
                sample = False  # only a call that did its work says something of load
                try:
                    result = await behaviour(request, ctx)
                    sample = True
                    return result
                finally:
                    limiter.release(time.monotonic() - start, sample, waited or 0.0)
                    limit_gauge.set(limiter.limit)

            return handle

        return wrap(handler, unary)  # type: ignore[return-value]
