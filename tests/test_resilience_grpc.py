"""The resilience layer with real grpc.aio servers on loopback: the registry service
(in process, and as two separate processes for the kill test)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kernel.rpc import access
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.resilience import context, metrics, tracing
from kernel.rpc.resilience.backoff import Backoff, pushback_s
from kernel.rpc.resilience.balancer import Outliers
from kernel.rpc.resilience.breaker import State
from kernel.rpc.resilience.budget import RetryBudget
from kernel.rpc.resilience.client import ResilienceConfig, ResilienceLayer, ResilientChannel
from kernel.rpc.resilience.faults import FaultInjector, FaultRule, ProcessKiller
from kernel.rpc.resilience.handlers import method_of
from kernel.rpc.resilience.limiter import MAX_RETRY_S, MIN_RETRY_S, AdaptiveLimiter, Gradient2
from kernel.rpc.resilience.policy import POLICIES, PolicyTable, Priority
from kernel.rpc.resilience.shedding import LoadShedder
from kernel.rpc.server import RunningServer, ServiceSpec, start_server
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc
from services.registry.service import RegistryService
from tests.services.conftest import Presenting

GET = "/livemesh.registry.v1.RegistryService/GetInstance"
LIST = "/livemesh.registry.v1.RegistryService/ListInstances"
REGISTER = "/livemesh.registry.v1.RegistryService/RegisterInstance"


class Counter(grpc.aio.ServerInterceptor):
    """Counts the calls that reach the server, per method."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        method = method_of(details)
        self.calls[method] = self.calls.get(method, 0) + 1
        return await continuation(details)


class Gate(grpc.aio.ServerInterceptor):
    """Holds unary calls of ``method`` until released; ``entered`` fires at ``n`` held;
    ``fail``: then answers that status instead."""

    def __init__(self, method: str, n: int, fail: grpc.StatusCode | None = None) -> None:
        self.method, self.n, self.held, self.fail = method, n, 0, fail
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if method_of(details) != self.method:
            return handler
        behaviour = handler.unary_unary

        async def held(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            self.held += 1
            if self.held >= self.n:
                self.entered.set()
            await self.release.wait()
            if self.fail is not None:
                await ctx.abort(self.fail, "failed at the gate")
            return await behaviour(request, ctx)

        return handler._replace(unary_unary=held)


Start = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[tuple[RegistryService | None, RunningServer]] = []

    async def starter(
        *interceptors: grpc.aio.ServerInterceptor, specs: list[ServiceSpec] | None = None
    ) -> RunningServer:
        service = None
        if specs is None:
            service = RegistryService()
            await service.start()
            specs = service.specs()
        running = await start_server(specs, interceptors=interceptors)
        started.append((service, running))
        return running

    yield starter
    for service, running in reversed(started):
        await running.server.stop(0)
        if service is not None:
            await service.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., RpcChannelFactory]]:
    made: list[RpcChannelFactory] = []

    def make(
        config: ResilienceConfig | None = None, policies: PolicyTable = POLICIES
    ) -> RpcChannelFactory:
        factory = RpcChannelFactory(layer=ResilienceLayer(config or ResilienceConfig(), policies))
        made.append(factory)
        return factory

    yield make
    for factory in made:
        await factory.close()


def dependency(factory: RpcChannelFactory, target: str) -> Any:
    channel = factory.channel(target)
    assert isinstance(channel, ResilientChannel)
    return channel.dependency


class Relay(pb_grpc.RegistryServiceServicer):
    """A hop: records the time it was given and asks the next hop (resilience layer)."""

    def __init__(self, factory: RpcChannelFactory, target: str) -> None:
        self.next = factory.stub(pb_grpc.RegistryServiceStub, target)
        self.seen: list[float] = []

    @access.public("a test hop")
    async def GetInstance(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.seen.append(context.time_remaining() or 0.0)
        try:
            return await self.next.GetInstance(request)
        except grpc.aio.AioRpcError as error:  # pass the downstream status on
            await context.abort(error.code(), error.details() or "")

    @access.public("a test hop")
    async def ListInstances(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.next.ListInstances(request)  # errors: the ErrorInterceptor's job


async def test_deadline_shrinks_hop_by_hop_and_a_slow_leaf_fails_the_call_in_time(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    leaf = await start(FaultInjector([FaultRule(GET, latency_s=3.0)]))
    factory = clients(ResilienceConfig(margin_s=0.02))
    hop2 = Relay(factory, leaf.target)
    second = await start(
        specs=[
            ServiceSpec(
                "livemesh.registry.v1.RegistryService",
                hop2,
                pb_grpc.add_RegistryServiceServicer_to_server,
            )
        ]
    )
    hop1 = Relay(factory, second.target)
    first = await start(
        specs=[
            ServiceSpec(
                "livemesh.registry.v1.RegistryService",
                hop1,
                pb_grpc.add_RegistryServiceServicer_to_server,
            )
        ]
    )
    stub = pb_grpc.RegistryServiceStub(grpc.aio.insecure_channel(first.target))
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstance(pb.GetInstanceRequest(name="instances/x"), timeout=0.5)
    took = time.monotonic() - began
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 0.6  # in time, not after the leaf's 3 s
    (t1,), (t2,) = hop1.seen, hop2.seen
    # give or take 1 ms: a server's time_remaining() reads up to 0.8 ms above the timeout
    # its caller sent (CI saw hop 1 read 0.50025 s of a 0.5 s deadline)
    assert 0.4 < t1 <= 0.5 + 0.001
    # each hop passes on less than it got, by the margin and more
    assert t2 <= t1 - 0.02 + 0.001


async def test_retries_stop_at_the_deadline(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    counter = Counter()
    leaf = await start(
        counter, FaultInjector([FaultRule(GET, error="UNAVAILABLE", error_rate=1.0)])
    )
    config = ResilienceConfig(
        max_attempts=1000,
        budget_min_retries=1000,
        backoff=Backoff(base_s=0.05, cap_s=0.05),
        breaker={"min_calls": 10_000},
    )
    stub = clients(config).stub(pb_grpc.RegistryServiceStub, leaf.target)
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstance(pb.GetInstanceRequest(name="instances/x"), timeout=0.3)
    took = time.monotonic() - began
    # the last error, or the deadline itself if the last attempt ran into it
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert took < 0.35
    # retried, but only while time was left: full jitter waits 25 ms on average, so about
    # 12 attempts fit in 0.3 s once attempts cost nothing, and 1 run in 5 fits 15 (the sum
    # of 14 waits has mean 0.35 s, sd 0.054 s); twice that many fit in 1 run in 30,000
    assert 2 <= counter.calls[GET] <= 2 * 0.3 / 0.025


async def test_retries_stop_at_the_budget(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    counter = Counter()
    leaf = await start(
        counter, FaultInjector([FaultRule(GET, error="UNAVAILABLE", error_rate=1.0)])
    )
    config = ResilienceConfig(
        max_attempts=5,
        budget_min_retries=0,
        backoff=Backoff(base_s=0.0001, cap_s=0.0001),
        breaker={"min_calls": 10_000},
    )
    factory = clients(config)
    stub = factory.stub(pb_grpc.RegistryServiceStub, leaf.target)
    for _ in range(200):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetInstance(pb.GetInstanceRequest(name="instances/x"))
    assert counter.calls[GET] == 220  # 10 % of 200 calls, though each could retry 4 times
    assert dependency(factory, leaf.target).budget.amplification() == pytest.approx(1.1)


async def test_attempts_per_call_stay_under_1_1_when_a_dependency_is_down(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    counter = Counter()
    leaf = await start(
        counter, FaultInjector([FaultRule("*", error="UNAVAILABLE", error_rate=1.0)])
    )
    stub = clients().stub(pb_grpc.RegistryServiceStub, leaf.target)  # defaults
    calls = 300
    results = await asyncio.gather(
        *(stub.ListInstances(pb.ListInstancesRequest()) for _ in range(calls)),
        return_exceptions=True,
    )
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results)
    assert counter.calls[LIST] / calls <= 1.1


async def test_a_slow_dependency_fills_only_its_own_bulkhead(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    slow = await start(FaultInjector([FaultRule(LIST, latency_s=0.5)]))
    fast = await start()
    factory = clients(ResilienceConfig(bulkhead_size=8, bulkhead_wait_s=0.02, hedging=False))
    slow_stub = factory.stub(pb_grpc.RegistryServiceStub, slow.target)
    fast_stub = factory.stub(pb_grpc.RegistryServiceStub, fast.target)
    request = pb.ListInstancesRequest()
    for _ in range(20):  # warm
        await fast_stub.ListInstances(request)

    async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
        began = time.monotonic()
        try:
            result: Any = await call
        except grpc.aio.AioRpcError as error:
            result = error
        return time.monotonic() - began, result

    slow_calls = [asyncio.ensure_future(timed(slow_stub.ListInstances(request))) for _ in range(40)]
    fast_times = [(await timed(fast_stub.ListInstances(request)))[0] for _ in range(50)]
    slow_done = await asyncio.gather(*slow_calls)
    rejected = [t for t, r in slow_done if isinstance(r, grpc.aio.AioRpcError)]
    assert len(rejected) == 32  # only 8 of the 40 hold a slot of the slow dependency
    assert all(
        r.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for _, r in slow_done
        if isinstance(r, grpc.aio.AioRpcError)
    )
    assert max(rejected) < 0.2  # turned away after the bounded wait, not after 0.5 s
    assert sorted(fast_times)[-3] < 0.1  # the other dependency is not slowed


async def test_breaker_opens_probes_and_closes(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    counter = Counter()
    faults = FaultInjector([FaultRule(LIST, error="UNAVAILABLE", error_rate=1.0)])
    leaf = await start(counter, faults)
    now = [0.0]
    config = ResilienceConfig(
        max_attempts=1,
        breaker={"window": 10, "min_calls": 5, "open_s": 5.0, "probes": 2, "clock": lambda: now[0]},
    )
    factory = clients(config)
    stub = factory.stub(pb_grpc.RegistryServiceStub, leaf.target)
    breaker = dependency(factory, leaf.target).breaker
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ListInstances(pb.ListInstancesRequest())
    assert breaker.state is State.OPEN
    assert f'livemesh_breaker_state{{dependency="{leaf.target}"}} 2.0' in metrics.render().decode()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListInstances(pb.ListInstancesRequest())
    assert "circuit open" in (caught.value.details() or "")
    assert counter.calls[LIST] == 5  # refused without an attempt
    faults.clear()  # the dependency recovers
    now[0] = 5.0
    await stub.ListInstances(pb.ListInstancesRequest())
    assert breaker.state is State.HALF_OPEN  # one probe passed, one to go
    await stub.ListInstances(pb.ListInstancesRequest())
    assert breaker.state is State.CLOSED
    assert counter.calls[LIST] == 7


@pytest.mark.parametrize("latency_s", [0.0, 0.06])
async def test_shed_calls_do_not_open_the_breaker(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
    latency_s: float,
) -> None:
    """An overloaded server sheds; its clients must not then cut it off entirely, also
    when its refusals arrive late (slower than the breaker's slow-call bound): a busy
    server's shed answers say nothing of its health."""
    shed = FaultRule(LIST, latency_s=latency_s, error="RESOURCE_EXHAUSTED", error_rate=1.0)
    faults = FaultInjector([shed])
    leaf = await start(Counter(), faults)
    breaker = {"window": 10, "min_calls": 5, "slow_call_s": 0.05}
    factory = clients(ResilienceConfig(max_attempts=1, breaker=breaker))
    stub = factory.stub(pb_grpc.RegistryServiceStub, leaf.target)
    for _ in range(10):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListInstances(pb.ListInstancesRequest())
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dependency(factory, leaf.target).breaker.state is State.CLOSED
    faults.clear()  # the overload passes: calls go through at once
    await stub.ListInstances(pb.ListInstancesRequest())


async def test_fallback_answers_while_the_dependency_is_down(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    leaf = await start()
    snapshot = pb.ListInstancesResponse(instances=[pb.Instance(name="instances/last-known")])
    policies = PolicyTable()
    policies.declare(LIST, read_only=True, fallback=lambda request: snapshot)
    factory = clients(ResilienceConfig(), policies)
    stub = factory.stub(pb_grpc.RegistryServiceStub, leaf.target)
    live = await stub.ListInstances(pb.ListInstancesRequest())
    assert list(live.instances) == []
    await leaf.server.stop(0)

    def fallbacks() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "livemesh_fallbacks_total", {"dependency": leaf.target, "method": LIST}
        )
        return value or 0.0

    before = fallbacks()
    for _ in range(5):
        answer = await stub.ListInstances(pb.ListInstancesRequest())
        assert [i.name for i in answer.instances] == ["instances/last-known"]
    assert fallbacks() == before + 5
    with pytest.raises(grpc.aio.AioRpcError):  # no fallback declared: the error shows
        await stub.GetInstance(pb.GetInstanceRequest(name="instances/x"))


async def _registry_process() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from services.registry.service import main; main()", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    assert line.startswith("registry: "), line
    return process, line.split(": ", 1)[1].strip()


async def test_killing_one_of_two_instances_loses_no_retryable_call(
    clients: Callable[..., RpcChannelFactory],
) -> None:
    killer = ProcessKiller()
    (one, a), (two, b) = await asyncio.gather(_registry_process(), _registry_process())
    try:
        killer.add("registry", one)
        killer.add("registry", two)
        # no hedges: on a busy machine they spend the retry budget this test is about
        factory = clients(ResilienceConfig(outliers=Outliers(consecutive=2), hedging=False))
        stub = factory.stub(pb_grpc.RegistryServiceStub, f"{a},{b}")
        halfway = asyncio.Event()
        done = 0
        results: list[Any] = []

        async def worker(n: int) -> None:
            nonlocal done
            for _ in range(n):
                try:
                    results.append(await stub.ListInstances(pb.ListInstancesRequest()))
                except grpc.aio.AioRpcError as error:
                    results.append(error)
                done += 1
                if done == 150:
                    halfway.set()

        workers = [asyncio.ensure_future(worker(50)) for _ in range(8)]
        await halfway.wait()
        assert killer.kill_one("registry") is not None
        await asyncio.gather(*workers)
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(results) == 400 and errors == []
    finally:
        for process in (one, two):
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


async def test_server_sheds_with_resource_exhausted_and_start_playback_last(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    gate = Gate(LIST, 6)  # limit 8: NORMAL may hold 6
    shedder = LoadShedder(AdaptiveLimiter(Gradient2(initial=8, min_limit=8, max_limit=8)))
    leaf = await start(shedder, gate)
    channel = grpc.aio.insecure_channel(leaf.target)
    stub = pb_grpc.RegistryServiceStub(channel)

    def prio(p: Priority) -> list[tuple[str, str]]:
        return [("livemesh-priority", str(int(p)))]

    held = [asyncio.ensure_future(stub.ListInstances(pb.ListInstancesRequest())) for _ in range(6)]
    await gate.entered.wait()
    for p in (Priority.LOW, Priority.NORMAL):  # shed at once, before any work
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListInstances(pb.ListInstancesRequest(), metadata=prio(p), timeout=1)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # and says when to come back (gRPC's retry trailer), within the limiter's bounds
        hint = pushback_s(caught.value.trailing_metadata())
        assert hint is not None and MIN_RETRY_S / 2 <= hint <= 1.5 * MAX_RETRY_S
    # the hops of a StartPlayback carry CRITICAL and are still admitted; a CRITICAL call
    # waits at the gate (it was admitted), so check admission by the in-flight count
    critical = asyncio.ensure_future(
        stub.ListInstances(pb.ListInstancesRequest(), metadata=prio(Priority.CRITICAL))
    )
    high = asyncio.ensure_future(
        stub.ListInstances(pb.ListInstancesRequest(), metadata=prio(Priority.HIGH))
    )
    while shedder.limiter.inflight < 8 and not (critical.done() or high.done()):
        await asyncio.sleep(0)  # yields to the server's tasks; no timing involved
    assert not critical.done() and not high.done()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListInstances(pb.ListInstancesRequest(), metadata=prio(Priority.HIGH))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.release.set()
    await asyncio.gather(*held, critical, high)
    assert (
        POLICIES.policy("/livemesh.playback.v1.PlaybackService/StartPlayback").priority
        is Priority.CRITICAL
    )
    await channel.close()


class Slow(grpc.aio.ServerInterceptor):
    """Delays unary calls of ``method`` by ``delay_s`` (0: none) and notes the ones
    cancelled while they waited (a hedge's loser)."""

    def __init__(self, method: str) -> None:
        self.method, self.delay_s = method, 0.0
        self.cancelled = asyncio.Event()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if method_of(details) != self.method or self.delay_s == 0:
            return handler
        behaviour, delay_s = handler.unary_unary, self.delay_s

        async def slow(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            try:
                await asyncio.sleep(delay_s)  # injected latency: the thing under test
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return await behaviour(request, ctx)

        return handler._replace(unary_unary=slow)


def counted(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_hedge_to_the_other_instance_wins_the_loser_is_cancelled_and_hedges_spend_budget(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
) -> None:
    slow = Slow(LIST)
    a = await start(slow)
    b = await start()
    # one hedge (or retry) in the window, no more
    factory = clients(ResilienceConfig(budget_ratio=0.0, budget_min_retries=1))
    target = f"{a.target},{b.target}"
    stub = factory.stub(pb_grpc.RegistryServiceStub, target)
    balancer = dependency(factory, target).balancer
    for _ in range(30):  # both fast: the layer learns the method's p95
        await stub.ListInstances(pb.ListInstancesRequest())
    assert dependency(factory, target).latency[LIST].p95() is not None
    # a warm-up call slower than the p95 learned so far was hedged (1 in 10 or so: 1 run
    # in 6 spent the budget there); the budget under test starts now
    dependency(factory, target).budget = RetryBudget(0.0, min_retries=1)
    hedges = counted("livemesh_rpc_hedges_total", dependency=target, method=LIST)
    slow.delay_s = 0.4

    async def on_a_first() -> float:
        balancer._next = balancer._order.index(a.target)  # the first attempt goes to A
        began = time.monotonic()
        await stub.ListInstances(pb.ListInstancesRequest(), timeout=2.0)
        return time.monotonic() - began

    took = await on_a_first()
    assert took < 0.3  # B answered the hedge before A's 0.4 s
    assert counted("livemesh_rpc_hedges_total", dependency=target, method=LIST) == hedges + 1
    await asyncio.wait_for(slow.cancelled.wait(), 1.0)  # A's attempt was cancelled
    exhausted = counted("livemesh_retry_budget_exhausted_total", dependency=target)
    took = await on_a_first()  # the budget is spent: no hedge, A's answer is awaited
    assert took >= 0.35
    assert counted("livemesh_rpc_hedges_total", dependency=target, method=LIST) == hedges + 1
    assert counted("livemesh_retry_budget_exhausted_total", dependency=target) == exhausted + 1


class Seen(grpc.aio.ServerInterceptor):
    """Keeps the invocation metadata of every call."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        self.metadata.append({k: v for k, v in details.invocation_metadata or ()})
        return await continuation(details)


async def test_one_trace_across_two_hops_with_w3c_traceparent_in_metadata(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # as setup_tracing does
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("livemesh.resilience"))
    seen = Seen()
    leaf = await start(seen)
    factory = clients()
    hop = await start(
        specs=[
            ServiceSpec(
                "livemesh.registry.v1.RegistryService",
                Relay(factory, leaf.target),
                pb_grpc.add_RegistryServiceServicer_to_server,
            )
        ]
    )
    await factory.stub(pb_grpc.RegistryServiceStub, hop.target).ListInstances(
        pb.ListInstancesRequest()
    )
    assert provider.force_flush()
    finished = exporter.get_finished_spans()
    assert len(finished) == 4  # caller -> hop (server, client) -> leaf
    clients_ = {
        (s.attributes or {})["peer.service"]: s for s in finished if s.kind is SpanKind.CLIENT
    }
    caller, leaf_call = clients_[hop.target], clients_[leaf.target]
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    hop_span = next(
        s for s in servers if s.parent is not None and s.parent.span_id == caller.context.span_id
    )
    leaf_span = next(s for s in servers if s is not hop_span)
    assert caller.parent is None  # the root: the test calls from outside any handler
    assert leaf_call.parent is not None and leaf_call.parent.span_id == hop_span.context.span_id
    assert leaf_span.parent is not None and leaf_span.parent.span_id == leaf_call.context.span_id
    assert {s.context.trace_id for s in finished} == {caller.context.trace_id}
    (metadata,) = [m for m in seen.metadata if "traceparent" in m]
    trace_id, span_id = leaf_call.context.trace_id, leaf_call.context.span_id
    flags = int(leaf_call.context.trace_flags)
    assert metadata["traceparent"] == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert leaf_call.context.trace_flags.sampled
    provider.shutdown()


async def test_head_sampling_keeps_or_drops_a_trace_whole_and_always_propagates(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler(0.0))  # no root is ever sampled
    provider.add_span_processor(BatchSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("livemesh.resilience"))
    seen = Seen()
    leaf = await start(seen)
    factory = clients()
    hop = await start(
        specs=[
            ServiceSpec(
                "livemesh.registry.v1.RegistryService",
                Relay(factory, leaf.target),
                pb_grpc.add_RegistryServiceServicer_to_server,
            )
        ]
    )
    stub = factory.stub(pb_grpc.RegistryServiceStub, hop.target)
    await stub.ListInstances(pb.ListInstancesRequest())
    assert provider.force_flush()
    assert exporter.get_finished_spans() == ()  # unsampled: nothing recorded on any hop
    (unsampled,) = [m for m in seen.metadata if "traceparent" in m]
    # but the context still went along, marked not sampled
    assert int(unsampled["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0

    # a caller that sampled its trace: every hop follows it, whatever its own ratio
    root_provider = TracerProvider()
    root_provider.add_span_processor(BatchSpanProcessor(exporter))
    with root_provider.get_tracer("test").start_as_current_span("root") as root:
        await stub.ListInstances(pb.ListInstancesRequest())
    assert provider.force_flush() and root_provider.force_flush()
    finished = exporter.get_finished_spans()
    assert len(finished) == 5  # root, caller -> hop (server, client) -> leaf
    assert {s.context.trace_id for s in finished} == {root.get_span_context().trace_id}
    assert all(s.context.trace_flags.sampled for s in finished)
    sampled = [m for m in seen.metadata if "traceparent" in m][-1]
    assert int(sampled["traceparent"].rsplit("-", 1)[1], 16) & 1 == 1
    provider.shutdown()
    root_provider.shutdown()


@pytest.mark.parametrize(
    "code",
    ["DEADLINE_EXCEEDED", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "NOT_FOUND", "PERMISSION_DENIED"],
)
async def test_a_hop_passes_the_downstream_status_and_details_on(
    start: Start,
    clients: Callable[..., RpcChannelFactory],
    code: str,
) -> None:
    if code == "DEADLINE_EXCEEDED":
        rule = FaultRule(LIST, latency_s=2.0)
    else:
        rule = FaultRule(LIST, error=code, error_rate=1.0)
    leaf = await start(FaultInjector([rule]))
    factory = clients(ResilienceConfig(margin_s=0.1, max_attempts=1))
    hop = await start(
        specs=[
            ServiceSpec(
                "livemesh.registry.v1.RegistryService",
                Relay(factory, leaf.target),
                pb_grpc.add_RegistryServiceServicer_to_server,
            )
        ]
    )
    async with grpc.aio.insecure_channel(hop.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.RegistryServiceStub(channel).ListInstances(
                pb.ListInstancesRequest(), timeout=0.5
            )
    assert caught.value.code() is grpc.StatusCode[code]  # not INTERNAL
    if code == "DEADLINE_EXCEEDED":  # the hop's own call ran out 0.1 s before the caller's
        assert caught.value.details() == "Deadline Exceeded"
    else:
        assert caught.value.details() == f"injected fault: {code}"


async def test_registry_watch_follows_changes_and_keeps_the_last_snapshot_when_down(
    start: Start, operator_auth: tuple[tuple[str, str], ...]
) -> None:
    registry = await start()
    layer = ResilienceLayer(ResilienceConfig(registry_target=registry.target))
    writer = grpc.aio.insecure_channel(registry.target)
    stub = Presenting(pb_grpc.RegistryServiceStub(writer), operator_auth)

    async def register(i: int, health: pb.Health = pb.HEALTH_SERVING) -> None:
        await stub.RegisterInstance(
            pb.RegisterInstanceRequest(
                instance=pb.Instance(
                    instance_id=f"w{i}",
                    service="watched",
                    address=f"127.0.0.1:{60000 + i}",
                    region="r1",
                    health=health,
                )
            )
        )

    await register(1)
    await register(2, pb.HEALTH_NOT_SERVING)
    # made inside a handler with 50 ms left: the watch must not inherit that deadline
    with context.inbound(0.05):
        channel = layer.channel("registry:///watched", grpc.aio.insecure_channel)
    balancer = channel.dependency.balancer
    try:
        await asyncio.wait_for(balancer.ready.wait(), 5)
        assert balancer._order == ["127.0.0.1:60001"]  # serving instances only
        for change, wanted in (
            (lambda: register(3), ["127.0.0.1:60001", "127.0.0.1:60003"]),
            (lambda: register(2), ["127.0.0.1:60001", "127.0.0.1:60002", "127.0.0.1:60003"]),
            (
                lambda: stub.DeregisterInstance(pb.DeregisterInstanceRequest(name="instances/w1")),
                ["127.0.0.1:60002", "127.0.0.1:60003"],
            ),
        ):
            balancer.changed.clear()
            began = time.monotonic()
            await change()
            await asyncio.wait_for(balancer.changed.wait(), 5)
            assert balancer._order == wanted
            assert time.monotonic() - began < 0.5  # pushed, not found by a poll
        assert balancer.resolve_errors == 0
        await registry.server.stop(0)  # the registry goes down
        await asyncio.wait_for(balancer.resolve_failed.wait(), 5)
        assert balancer._order == ["127.0.0.1:60002", "127.0.0.1:60003"]  # last snapshot
    finally:
        await channel.close()
        await writer.close()


async def test_a_hedge_that_loses_with_an_error_leaves_no_exception_unretrieved(
    start: Start, clients: Callable[..., RpcChannelFactory]
) -> None:
    """The first attempt and its hedge answer at once, the first OK, the hedge INTERNAL:
    the call has the answer, and asyncio never reports the loser's error as a task
    exception nobody retrieved (rounds: which of the two the wait hands back first is
    up to the set's order)."""
    rounds = 12
    gates = [Gate(LIST, 1), Gate(LIST, 1)]
    gates[1].release = gates[0].release  # both answer at once
    gates[0].release.set()
    a, b = [await start(gate) for gate in gates]
    # every round hedges: budget to spare, B (failing each hedge) never ejected
    config = ResilienceConfig(
        budget_ratio=1.0, budget_min_retries=100, outliers=Outliers(consecutive=1000)
    )
    factory = clients(config)
    target = f"{a.target},{b.target}"
    stub = factory.stub(pb_grpc.RegistryServiceStub, target)
    balancer = dependency(factory, target).balancer
    for _ in range(30):  # both fast: the layer learns the method's p95
        await stub.ListInstances(pb.ListInstancesRequest())
    gates[1].fail = grpc.StatusCode.INTERNAL  # B fails from now on
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx["message"]))
    try:
        for _ in range(rounds):
            for gate in gates:
                gate.held = 0
                gate.entered.clear()
                gate.release.clear()
            balancer._next = balancer._order.index(a.target)  # the first attempt goes to A
            call = asyncio.ensure_future(stub.ListInstances(pb.ListInstancesRequest(), timeout=5))
            for gate in gates:  # A's attempt and B's hedge, held
                await asyncio.wait_for(gate.entered.wait(), 5)
            gates[0].release.set()
            assert isinstance(await call, pb.ListInstancesResponse)
        await asyncio.sleep(0)  # the losers' last callbacks
        gc.collect()  # a task whose exception nobody retrieved says so when collected
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []
