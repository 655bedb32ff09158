"""One downstream dependency: its instances, bulkhead, breaker, retry budget and latencies.

A unary call goes, in :meth:`Dependency.unary`: the span and the declared fallback;
the deadline, the first resolved instance and a bulkhead slot; then attempts, each
behind a breaker permit on an instance by round robin, retried when retry-safe within
the deadline and the budget (one attempt, or a hedged pair, is :mod:`.attempt`).  A
streaming call takes one instance and the propagated deadline, nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

import grpc
from opentelemetry import trace

from kernel.rpc.resilience import context, metrics, tracing
from kernel.rpc.resilience.attempt import attempt, hedge_after, hedged
from kernel.rpc.resilience.backoff import pushback_s
from kernel.rpc.resilience.balancer import Balancer
from kernel.rpc.resilience.breaker import CircuitBreaker, State
from kernel.rpc.resilience.budget import RetryBudget
from kernel.rpc.resilience.bulkhead import Bulkhead, BulkheadFull
from kernel.rpc.resilience.config import ResilienceConfig
from kernel.rpc.resilience.latency import LatencyTracker
from kernel.rpc.resilience.method import Method, OnEndpoint
from kernel.rpc.resilience.outcomes import FALLBACK_ON, RETRYABLE, local_error
from kernel.rpc.resilience.policy import MethodPolicy, PolicyTable

log = logging.getLogger(__name__)


class Dependency:
    """One downstream dependency: its instances, bulkhead, breaker, budget, latencies."""

    def __init__(
        self,
        name: str,
        balancer: Balancer,
        config: ResilienceConfig,
        policies: PolicyTable,
    ) -> None:
        self.name = name
        self.balancer = balancer
        self.config = config
        self.policies = policies
        self.bulkhead = Bulkhead(config.bulkhead_size, config.bulkhead_wait_s)
        self.budget = RetryBudget(
            config.budget_ratio, config.budget_window_s, min_retries=config.budget_min_retries
        )
        self.breaker = CircuitBreaker(on_change=self._breaker_changed, **config.breaker)
        self._methods: dict[str, Method] = {}
        metrics.BREAKER_STATE.labels(name).set(0)

    def method(self, name: str) -> Method:
        """The per-method state of ``name`` (made once: stubs may be made per call)."""
        found = self._methods.get(name)
        if found is None:
            found = self._methods[name] = Method(name, self.name)
        return found

    @property
    def latency(self) -> dict[str, LatencyTracker]:
        """Each called method's latencies (what the hedge's p95 is taken from)."""
        return {name: call.latency for name, call in self._methods.items()}

    def _breaker_changed(self, old: State, new: State) -> None:
        metrics.BREAKER_STATE.labels(self.name).set(int(new))
        log.warning("breaker %s: %s -> %s", self.name, old.name, new.name)

    @staticmethod
    def _metadata(
        given: Any,
        policy: MethodPolicy,
        span: trace.Span | None,
    ) -> list[tuple[str, str]]:
        """The caller's metadata, the priority (the method's, raised to the inbound
        call's) and the trace context of ``span`` (None: the current span's)."""
        metadata = [(k, v) for k, v in given] if given else []
        inherited = context.priority()
        prio = policy.priority
        metadata.append(
            context.priority_entry(prio if inherited is None or prio < inherited else inherited)
        )
        tracing.inject(metadata, span)
        return metadata

    # -- unary-unary --------------------------------------------------------------------

    async def unary(
        self,
        call: Method,
        on: OnEndpoint,
        request: Any,
        timeout: float | None,
        metadata: Any,
    ) -> Any:
        policy = self.policies.policy(call.name)
        span = tracing.start_client(call.span_name, call.span_attributes)
        try:
            try:
                result = await self._bounded(
                    call, policy, on, request, timeout, self._metadata(metadata, policy, span)
                )
            except grpc.aio.AioRpcError as error:
                code = error.code()
                metrics.child(metrics.CALLS, self.name, call.name, code.name).inc()
                tracing.record_status(span, code)
                if policy.fallback is None or code not in FALLBACK_ON:
                    raise
                metrics.child(metrics.FALLBACKS, self.name, call.name).inc()
                span.set_attribute("livemesh.fallback", True)
                # the fallback runs as part of this call (a call it makes is a child span)
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    answer = policy.fallback(request)
                    result = await answer if inspect.isawaitable(answer) else answer
            else:
                call.calls_ok.inc()
        except BaseException as error:
            tracing.end(span, error)
            raise
        tracing.end(span)
        return result

    async def _bounded(
        self,
        call: Method,
        policy: MethodPolicy,
        on: OnEndpoint,
        request: Any,
        timeout: float | None,
        md: list[tuple[str, str]],
    ) -> Any:
        budget_s = context.outbound_timeout(policy.timeout_s, self.config.margin_s, timeout)
        if budget_s < self.config.min_attempt_s:
            raise local_error(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{call.name}: no time left of the caller's deadline",
            )
        deadline = time.monotonic() + budget_s
        self.budget.record_call()
        if not self.balancer.ready.is_set():
            try:
                await asyncio.wait_for(self.balancer.ready.wait(), budget_s)
            except TimeoutError:
                raise local_error(
                    grpc.StatusCode.UNAVAILABLE, f"{self.name}: no instance resolved"
                ) from None
        bulkhead = self.bulkhead
        try:
            await bulkhead.acquire(deadline - time.monotonic(), policy.queue_s)
        except BulkheadFull as full:
            metrics.BULKHEAD_REJECTED.labels(self.name).inc()
            raise local_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.name}: bulkhead full: {full}"
            ) from None
        try:
            return await self._attempts(call, policy, on, request, deadline, md)
        finally:
            bulkhead.release()

    async def _attempts(
        self,
        call: Method,
        policy: MethodPolicy,
        on: OnEndpoint,
        request: Any,
        deadline: float,
        md: list[tuple[str, str]],
    ) -> Any:
        tried: set[str] = set()
        retries = 0
        last: grpc.aio.AioRpcError | None = None
        while True:
            if not self.breaker.try_acquire():
                metrics.BREAKER_REJECTED.labels(self.name).inc()
                raise last or local_error(grpc.StatusCode.UNAVAILABLE, f"{self.name}: circuit open")
            endpoint = self.balancer.pick(tried) or self.balancer.pick()
            if endpoint is None:
                self.breaker.release()
                raise last or local_error(grpc.StatusCode.UNAVAILABLE, f"{self.name}: no instance")
            tried.add(endpoint.address)
            try:
                after_s = hedge_after(self, call, policy, endpoint, deadline)
                if after_s is not None:
                    return await hedged(
                        self, call, on, request, endpoint, deadline, md, after_s, tried
                    )
                return await attempt(self, call, on, request, endpoint, deadline, md)
            except grpc.aio.AioRpcError as error:
                last = error
                if not policy.retry_safe(request) or error.code() not in RETRYABLE:
                    raise
                pushback = pushback_s(error.trailing_metadata())
                retries += 1
                if (pushback is not None and pushback < 0) or retries >= self.config.max_attempts:
                    raise
                delay = pushback if pushback is not None else self.config.backoff.delay(retries)
                if time.monotonic() + delay + self.config.min_attempt_s >= deadline:
                    raise  # a retry would not finish in time: never past the deadline
                if not self.budget.try_spend():
                    metrics.BUDGET_EXHAUSTED.labels(self.name).inc()
                    raise
                metrics.child(metrics.RETRIES, self.name, call.name).inc()
                await asyncio.sleep(delay)

    # -- unary-stream -------------------------------------------------------------------

    def stream(
        self, call: Method, on: OnEndpoint, request: Any, timeout: float | None, metadata: Any
    ) -> Any:
        """A streaming call: one instance, the propagated deadline, no retries."""
        policy = self.policies.policy(call.name)
        limit = context.outbound_timeout(
            self.config.stream_timeout_s, self.config.margin_s, timeout
        )
        endpoint = self.balancer.pick()
        if endpoint is None:
            raise local_error(grpc.StatusCode.UNAVAILABLE, f"{self.name}: no instance resolved")
        return on(endpoint.least_busy())(
            request, timeout=max(limit, 0.0), metadata=self._metadata(metadata, policy, None)
        )

    async def close(self) -> None:
        await self.balancer.close()
