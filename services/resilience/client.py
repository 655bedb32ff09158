"""The client half of the layer: every outbound call of a dependency, as one path.

``ResilientChannel`` stands where a ``grpc.aio.Channel`` stands (generated stubs
take it unchanged). A unary call goes:

  deadline (inbound remaining - margin, else the method's default; none left → fail now)
  → bulkhead slot of the dependency (bounded wait)
  → attempt: breaker permit → instance by round robin → call with the remaining time
  → on UNAVAILABLE / RESOURCE_EXHAUSTED, if the call is retry-safe: backoff with full
    jitter (or the server's ``grpc-retry-pushback-ms``), only if it fits before the
    deadline and the retry budget allows, on another instance
  → read-only methods: a hedge to another instance after the method's observed p95
  → on failure, the method's declared fallback, if any.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace

from services.resilience import context, metrics, tracing
from services.resilience.backoff import Backoff, pushback_s
from services.resilience.balancer import Balancer, Connect, Endpoint, Outliers
from services.resilience.breaker import CircuitBreaker, State
from services.resilience.budget import RetryBudget
from services.resilience.bulkhead import Bulkhead, BulkheadFull
from services.resilience.latency import LatencyTracker
from services.resilience.policy import POLICIES, MethodPolicy, PolicyTable

log = logging.getLogger(__name__)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# what counts against a dependency's health (not the caller's own mistakes).  A shed call
# (RESOURCE_EXHAUSTED) is not: the server is healthy and protecting itself, and counting
# it would open the breaker and turn a brief overload into a total outage.
FAILURES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS,
})
FALLBACK_ON = FAILURES | {grpc.StatusCode.RESOURCE_EXHAUSTED}


def local_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An error the layer raises without a call, shaped as the one a call raises."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@dataclass(frozen=True)
class ResilienceConfig:
    margin_s: float = 0.005  # kept back from the inbound deadline for the way back
    min_attempt_s: float = 0.002  # no attempt is started with less time than this
    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    budget_ratio: float = 0.1
    budget_window_s: float = 10.0
    budget_min_retries: int = 3
    bulkhead_size: int = 64
    bulkhead_wait_s: float = 0.05
    breaker: dict[str, Any] = field(default_factory=dict)  # CircuitBreaker keyword arguments
    hedging: bool = True
    outliers: Outliers = field(default_factory=Outliers)
    health_interval_s: float = 1.0
    stream_timeout_s: float = 300.0
    registry_target: str = "127.0.0.1:50051"
    resolve_retry_s: float = 1.0  # a failed registry watch is tried again after this


OnEndpoint = Callable[[Endpoint], Any]  # the channel's multi-callable of the method on one


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


class Dependency:
    """One downstream dependency: its instances, bulkhead, breaker, budget, latencies."""

    def __init__(
        self, name: str, balancer: Balancer, config: ResilienceConfig, policies: PolicyTable,
    ) -> None:
        self.name = name
        self.balancer = balancer
        self.config = config
        self.policies = policies
        self.bulkhead = Bulkhead(config.bulkhead_size, config.bulkhead_wait_s)
        self.budget = RetryBudget(config.budget_ratio, config.budget_window_s,
                                  min_retries=config.budget_min_retries)
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
    def _metadata(given: Any, policy: MethodPolicy, span: trace.Span | None,
                  ) -> list[tuple[str, str]]:
        """The caller's metadata, the priority (the method's, raised to the inbound
        call's) and the trace context of ``span`` (None: the current span's)."""
        metadata = [(k, v) for k, v in given] if given else []
        inherited = context.priority()
        prio = policy.priority
        metadata.append(context.priority_entry(
            prio if inherited is None or prio < inherited else inherited))
        tracing.inject(metadata, span)
        return metadata

    # -- unary-unary --------------------------------------------------------------------

    async def unary(
        self, call: Method, on: OnEndpoint, request: Any, timeout: float | None, metadata: Any,
    ) -> Any:
        policy = self.policies.policy(call.name)
        span = tracing.start_client(call.span_name, call.span_attributes)
        try:
            try:
                result = await self._bounded(call, policy, on, request, timeout,
                                             self._metadata(metadata, policy, span))
            except grpc.aio.AioRpcError as error:
                code = error.code()
                metrics.child(metrics.CALLS, self.name, call.name, code.name).inc()
                tracing.record_status(span, code)
                if policy.fallback is None or code not in FALLBACK_ON:
                    raise
                metrics.child(metrics.FALLBACKS, self.name, call.name).inc()
                span.set_attribute("livemesh.fallback", True)
                # the fallback runs as part of this call (a call it makes is a child span)
                with trace.use_span(span, record_exception=False,
                                    set_status_on_exception=False):
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
        self, call: Method, policy: MethodPolicy, on: OnEndpoint, request: Any,
        timeout: float | None, md: list[tuple[str, str]],
    ) -> Any:
        budget_s = context.outbound_timeout(policy.timeout_s, self.config.margin_s, timeout)
        if budget_s < self.config.min_attempt_s:
            raise local_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"{call.name}: no time left of the caller's deadline")
        deadline = time.monotonic() + budget_s
        self.budget.record_call()
        if not self.balancer.ready.is_set():
            try:
                await asyncio.wait_for(self.balancer.ready.wait(), budget_s)
            except TimeoutError:
                raise local_error(grpc.StatusCode.UNAVAILABLE,
                                  f"{self.name}: no instance resolved") from None
        bulkhead = self.bulkhead
        try:
            await bulkhead.acquire(deadline - time.monotonic())
        except BulkheadFull as full:
            metrics.BULKHEAD_REJECTED.labels(self.name).inc()
            raise local_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{self.name}: bulkhead full: {full}") from None
        try:
            return await self._attempts(call, policy, on, request, deadline, md)
        finally:
            bulkhead.release()

    async def _attempts(
        self, call: Method, policy: MethodPolicy, on: OnEndpoint, request: Any,
        deadline: float, md: list[tuple[str, str]],
    ) -> Any:
        tried: set[str] = set()
        retries = 0
        last: grpc.aio.AioRpcError | None = None
        while True:
            if not self.breaker.try_acquire():
                metrics.BREAKER_REJECTED.labels(self.name).inc()
                raise last or local_error(grpc.StatusCode.UNAVAILABLE,
                                          f"{self.name}: circuit open")
            endpoint = self.balancer.pick(tried) or self.balancer.pick()
            if endpoint is None:
                self.breaker.release()
                raise last or local_error(grpc.StatusCode.UNAVAILABLE, f"{self.name}: no instance")
            tried.add(endpoint.address)
            try:
                hedge_after = self._hedge_after(call, policy, endpoint, deadline)
                if hedge_after is not None:
                    return await self._hedged(call, on, request, endpoint, deadline, md,
                                              hedge_after, tried)
                return await self._attempt(call, on, request, endpoint, deadline, md)
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

    def _hedge_after(
        self, call: Method, policy: MethodPolicy, endpoint: Endpoint, deadline: float,
    ) -> float | None:
        if not (self.config.hedging and policy.read_only):
            return None
        if not self.balancer.has_other(endpoint.address):
            return None  # no other instance to hedge to
        p95 = call.latency.p95()
        if p95 is None or time.monotonic() + p95 >= deadline:
            return None
        return p95

    async def _attempt(
        self, call: Method, on: OnEndpoint, request: Any, endpoint: Endpoint,
        deadline: float, md: list[tuple[str, str]],
    ) -> Any:
        """One attempt on ``endpoint`` (the breaker permit is already taken)."""
        start = time.monotonic()
        timeout = max(deadline - start, 0.0)
        try:
            result = await on(endpoint)(  # (as Metadata: gRPC's own check of a tuple is slow)
                request, timeout=timeout,
                metadata=grpc.aio.Metadata(*md, context.timeout_entry(timeout)))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            elapsed = time.monotonic() - start
            metrics.child(metrics.ATTEMPTS, self.name, call.name, code.name).inc()
            self.breaker.record(code in FAILURES, elapsed)
            self.balancer.record(endpoint, code in FAILURES)
            raise
        except BaseException:  # cancelled (a hedge's loser, or the caller gave up)
            self.breaker.release()
            raise
        elapsed = time.monotonic() - start
        call.attempts_ok.inc()
        self.breaker.record(False, elapsed)
        self.balancer.record(endpoint, False)
        call.latency.add(elapsed)
        return result

    async def _hedged(
        self, call: Method, on: OnEndpoint, request: Any, first: Endpoint, deadline: float,
        md: list[tuple[str, str]], hedge_after: float, tried: set[str],
    ) -> Any:
        """First attempt now, a second on another instance after ``hedge_after``;
        the first answer wins and the other is cancelled."""
        tasks = {asyncio.ensure_future(self._attempt(call, on, request, first, deadline, md))}
        try:
            done, _ = await asyncio.wait(tasks, timeout=hedge_after)
            if done:
                return done.pop().result()
            other = self.balancer.pick(tried | {first.address})
            if other is not None and self.budget.try_spend():
                if self.breaker.try_acquire():
                    tried.add(other.address)
                    metrics.child(metrics.HEDGES, self.name, call.name).inc()
                    tasks.add(asyncio.ensure_future(
                        self._attempt(call, on, request, other, deadline, md)))
            elif other is not None:
                metrics.BUDGET_EXHAUSTED.labels(self.name).inc()
            error: BaseException | None = None
            while tasks:
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    error = task.exception()
            assert error is not None
            raise error
        finally:
            for task in tasks:
                task.cancel()

    # -- unary-stream -------------------------------------------------------------------

    def stream(self, call: Method, on: OnEndpoint, request: Any, timeout: float | None,
               metadata: Any) -> Any:
        """A streaming call: one instance, the propagated deadline, no retries."""
        policy = self.policies.policy(call.name)
        limit = context.outbound_timeout(self.config.stream_timeout_s, self.config.margin_s,
                                         timeout)
        endpoint = self.balancer.pick()
        if endpoint is None:
            raise local_error(grpc.StatusCode.UNAVAILABLE, f"{self.name}: no instance resolved")
        return on(endpoint)(request, timeout=max(limit, 0.0),
                            metadata=self._metadata(metadata, policy, None))

    async def close(self) -> None:
        await self.balancer.close()


class _MultiCallable:
    """One method of a dependency, as a generated stub holds it: per instance, the
    channel's own multi-callable of ``kind``, made once per channel."""

    def __init__(self, dependency: Dependency, method: str, kind: str, serializer: Any,
                 deserializer: Any) -> None:
        self.dependency = dependency
        self.call = dependency.method(method)
        self.kind = kind
        self.serializer = serializer
        self.deserializer = deserializer
        # address -> (the channel, its multi-callable): an address that comes back after
        # it was dropped has a new channel, and the old one is closed
        self._callables: dict[str, tuple[grpc.aio.Channel, Any]] = {}

    def on(self, endpoint: Endpoint) -> Any:
        cached = self._callables.get(endpoint.address)
        if cached is not None and cached[0] is endpoint.channel:
            return cached[1]
        callable_ = getattr(endpoint.channel, self.kind)(
            self.call.name, request_serializer=self.serializer,
            response_deserializer=self.deserializer,
        )
        self._callables[endpoint.address] = (endpoint.channel, callable_)
        return callable_


class _UnaryUnary(_MultiCallable):
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None,
                 **_: Any) -> Any:
        return self.dependency.unary(self.call, self.on, request, timeout, metadata)


class _Streaming(_MultiCallable):
    """Server- and client-streaming calls (the latter: reflection, none in livemesh's
    APIs): one instance, the propagated deadline, nothing else."""

    def __call__(self, request: Any = None, *, timeout: float | None = None,
                 metadata: Any = None, **_: Any) -> Any:
        return self.dependency.stream(self.call, self.on, request, timeout, metadata)


class ResilientChannel:
    """Stands for a ``grpc.aio.Channel`` in generated stubs (unary and server-streaming)."""

    def __init__(self, dependency: Dependency) -> None:
        self.dependency = dependency

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, **_: Any) -> _UnaryUnary:
        return _UnaryUnary(self.dependency, _name(method), "unary_unary", request_serializer,
                           response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, **_: Any) -> _Streaming:
        return _Streaming(self.dependency, _name(method), "unary_stream", request_serializer,
                          response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, **_: Any) -> _Streaming:
        return _Streaming(self.dependency, _name(method), "stream_unary", request_serializer,
                          response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, **_: Any) -> _Streaming:
        return _Streaming(self.dependency, _name(method), "stream_stream", request_serializer,
                          response_deserializer)

    async def close(self, grace: float | None = None) -> None:
        await self.dependency.close()


def _name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


class ResilienceLayer:
    """What the channel factory asks for a channel: one :class:`Dependency` per target.

    Targets: ``host:port``, ``host:port,host:port`` (fixed instances) or
    ``registry:///<service>`` (instances resolved from the registry).
    """

    def __init__(self, config: ResilienceConfig | None = None,
                 policies: PolicyTable = POLICIES) -> None:
        self.config = config or ResilienceConfig()
        self.policies = policies

    def channel(self, target: str, connect: Connect) -> ResilientChannel:
        config = self.config
        balancer = Balancer(target, connect, config.outliers, config.health_interval_s)
        if target.startswith("registry:///"):
            service = target.removeprefix("registry:///")
            balancer.dependency = service
            balancer.follow(self._resolver(service, connect), config.resolve_retry_s)
            name = service
        else:
            balancer.set_addresses([a.strip() for a in target.split(",") if a.strip()])
            name = target
        return ResilientChannel(Dependency(name, balancer, config, self.policies))

    def _resolver(
        self, service: str, connect: Connect,
    ) -> Callable[[], AsyncIterator[list[str]]]:
        """The registry's ``WatchInstances`` for ``service`` as a stream of address sets:
        the serving instances at the end of the snapshot, then after every change."""
        from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc

        registry = ResilientChannel(Dependency(
            "registry", _static(self.config.registry_target, connect, self.config),
            self.config, self.policies,
        ))
        stub = registry_pb2_grpc.RegistryServiceStub(registry)
        removed = registry_pb2.CHANGE_TYPE_REMOVED
        serving = registry_pb2.HEALTH_SERVING

        async def watch() -> AsyncIterator[list[str]]:
            instances: dict[str, Any] = {}
            complete = False
            async for change in stub.WatchInstances(
                    registry_pb2.WatchInstancesRequest(service=service)):
                if change.snapshot_complete:
                    complete = True
                elif change.change_type == removed:
                    instances.pop(change.instance.name, None)
                else:
                    instances[change.instance.name] = change.instance
                if complete:
                    yield sorted(i.address for i in instances.values() if i.health == serving)

        return watch


def _static(target: str, connect: Connect, config: ResilienceConfig) -> Balancer:
    balancer = Balancer(target, connect, config.outliers, config.health_interval_s)
    balancer.set_addresses([a.strip() for a in target.split(",") if a.strip()])
    return balancer
