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

A shed call carries ``grpc-retry-pushback-ms`` (gRPC's own retry trailer): when to
come back, jittered about the queue's drain time (:meth:`AdaptiveLimiter.retry_after_s`).
The gateway passes it to players as its documented retry hint, so a crowd that was shed
together comes back spread over the time the server needs, not all at once.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from kernel.rpc.resilience import metrics
from kernel.rpc.resilience.backoff import PUSHBACK_KEY
from kernel.rpc.resilience.context import Inbound
from kernel.rpc.resilience.handlers import Stage, UnaryStep
from kernel.rpc.resilience.limiter import AdaptiveLimiter
from kernel.rpc.resilience.policy import POLICIES, PolicyTable


class LoadShedder(Stage):
    def __init__(
        self,
        limiter: AdaptiveLimiter | None = None,
        policies: PolicyTable = POLICIES,
        name: str = "server",
    ) -> None:
        super().__init__()
        self.limiter = limiter or AdaptiveLimiter()
        self.policies = policies
        self.name = name
        self._limit_gauge = metrics.LIMIT.labels(name)
        self._limit_gauge.set(self.limiter.limit)

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        if method.startswith("/grpc."):  # health and reflection are never shed
            return inner
        declared = self.policies.policy(method).priority
        limiter = self.limiter
        limit_gauge = self._limit_gauge
        shed = {prio: metrics.SHED.labels(method, prio.name) for prio in type(declared)}

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound) -> Any:
            prio = call.priority(declared)
            waited = None
            sent_timeout = call.sent_timeout_s
            if sent_timeout is not None:
                remaining = ctx.time_remaining()
                if remaining is not None:
                    waited = max(0.0, sent_timeout - remaining)
            if not limiter.try_acquire(prio, waited):
                shed[prio].inc()
                hint_ms = round(limiter.retry_after_s(waited) * 1000)
                ctx.set_trailing_metadata(((PUSHBACK_KEY, str(hint_ms)),))
                await ctx.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: {limiter.why_shed(waited)}"
                )
            start = time.monotonic()
            sample = False  # only a call that did its work says something of load
            try:
                result = await inner(request, ctx, call)
                sample = True
                return result
            finally:
                if limiter.release(time.monotonic() - start, sample, waited or 0.0):
                    limit_gauge.set(limiter.limit)

        return handle
