"""Pure logic of the resilience layer, without sockets: backoff, budget, breaker,
limiter, p95 tracker, outlier ejection, policies."""

from __future__ import annotations

import asyncio
import random

import pytest

from kernel.rpc.resilience import Chain, server_interceptors
from kernel.rpc.resilience.backoff import Backoff, pushback_s
from kernel.rpc.resilience.balancer import Connection, Endpoint
from kernel.rpc.resilience.breaker import CircuitBreaker, State
from kernel.rpc.resilience.budget import RetryBudget
from kernel.rpc.resilience.bulkhead import Bulkhead, BulkheadFull
from kernel.rpc.resilience.latency import LatencyTracker
from kernel.rpc.resilience.limiter import (
    MAX_RETRY_S,
    MIN_RETRY_S,
    SHED_MEMORY_S,
    AdaptiveLimiter,
    Gradient2,
    QueueWait,
)
from kernel.rpc.resilience.policy import POLICIES, START_QUEUE_S, Priority
from kernel.rpc.resilience.shedding import LoadShedder


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    backoff = Backoff(base_s=0.01, cap_s=0.1, multiplier=2)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 5)] == [0.01, 0.02, 0.04, 0.08, 0.1]
    rng = random.Random(1)
    delays = [backoff.delay(3, rng) for _ in range(1000)]
    assert 0 <= min(delays) < 0.004 and 0.036 < max(delays) <= 0.04


def test_pushback_parsed_from_trailing_metadata() -> None:
    assert pushback_s((("grpc-retry-pushback-ms", "250"),)) == 0.25
    assert pushback_s((("grpc-retry-pushback-ms", "-1"),)) == -1.0
    assert pushback_s((("grpc-retry-pushback-ms", "soon"),)) == -1.0
    assert pushback_s((("other", "1"),)) is None


def test_budget_caps_retries_at_ten_percent_over_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, window_s=10, min_retries=0, clock=clock)
    granted = 0
    for _ in range(1000):
        budget.record_call()
        granted += budget.try_spend()
    assert granted == 100
    assert budget.amplification() == 1.1
    clock.now = 20.0  # the window has passed: the old calls no longer earn retries
    assert not budget.try_spend()


def test_breaker_opens_on_failure_rate_probes_and_closes() -> None:
    clock = Clock()
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker(
        window=10,
        min_calls=4,
        failure_rate=0.5,
        open_s=5,
        probes=2,
        clock=clock,
        on_change=lambda a, b: changes.append((a, b)),
    )
    for failed in (False, True, False, True):
        assert breaker.try_acquire()
        breaker.record(failed, 0.01)
    assert breaker.state is State.OPEN and not breaker.try_acquire()
    clock.now = 5.0
    assert breaker.try_acquire() and breaker.try_acquire()  # two probes
    assert not breaker.try_acquire()  # and no more
    breaker.record(False, 0.01)
    breaker.record(False, 0.01)
    assert breaker.state is State.CLOSED
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_breaker_opens_on_slow_calls_and_a_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        window=5, min_calls=5, slow_call_s=0.5, slow_rate=0.8, open_s=1, probes=1, clock=clock
    )
    for _ in range(5):
        breaker.try_acquire()
        breaker.record(False, 0.6)
    assert breaker.current() is State.OPEN
    clock.now = 1.0
    assert breaker.try_acquire()
    breaker.record(True, 0.01)
    assert breaker.current() is State.OPEN


def test_a_call_goes_on_the_connection_with_the_fewest_in_flight() -> None:
    """Connections stand for the workers behind a shared port: the least busy takes the
    next call, and an idle instance's calls go round all of them."""
    endpoint = Endpoint("a:1", [Connection(channel=object()) for _ in range(4)])  # type: ignore[arg-type]
    picked = [endpoint.least_busy() for _ in range(8)]
    assert [endpoint.connections.index(c) for c in picked] == [1, 2, 3, 0, 1, 2, 3, 0]
    for connection, in_flight in zip(endpoint.connections, (3, 1, 2, 5), strict=True):
        connection.in_flight = in_flight
    assert {id(endpoint.least_busy()) for _ in range(4)} == {id(endpoint.connections[1])}


def test_latency_tracker_p95() -> None:
    tracker = LatencyTracker(size=100, min_samples=20)
    for i in range(19):
        tracker.add(i / 1000)
    assert tracker.p95() is None
    for i in range(19, 100):
        tracker.add(i / 1000)
    assert tracker.p95() == 0.094
    for _ in range(100):  # the window slides: old samples go
        tracker.add(1.0)
    assert tracker.p95() == 1.0


def test_gradient2_shrinks_when_latency_queues_and_grows_when_not() -> None:
    limit = Gradient2(initial=50, min_limit=4, max_limit=200, sample_window=10)
    for _ in range(200):
        limit.on_sample(0.010, inflight=50)
    grown = limit.limit
    assert grown > 50
    for _ in range(200):
        limit.on_sample(0.050, inflight=int(limit.limit))  # five times the floor: queueing
    assert limit.limit < grown * 0.6


def test_priorities_share_the_limit_and_critical_is_shed_last() -> None:
    limiter = AdaptiveLimiter(Gradient2(initial=8, min_limit=8, max_limit=8))
    admitted = {p: 0 for p in Priority}
    for prio in (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL):
        while limiter.try_acquire(prio):
            admitted[prio] += 1
    # LOW up to 4 in flight, NORMAL up to 6, HIGH up to 7.2, CRITICAL up to 8
    assert admitted == {Priority.LOW: 4, Priority.NORMAL: 2, Priority.HIGH: 2, Priority.CRITICAL: 0}
    limiter.release(0.01)
    assert not limiter.try_acquire(Priority.NORMAL)
    assert limiter.try_acquire(Priority.CRITICAL)


def test_wait_rule_sheds_only_while_a_queue_stands() -> None:
    now = [0.0]
    queue = QueueWait(tolerance=1.0, min_wait_s=0.005, interval_s=0.05, clock=lambda: now[0])
    assert queue.admit(1.0)  # no service time learned yet: no basis to shed
    queue.served(0.010)  # target: 10 ms
    assert queue.target_s() == 0.010
    # a burst (a stalled process): long waits, but one call of the interval did not wait
    for wait in (0.03, 0.0, 0.04):
        assert queue.admit(wait)
        now[0] += 0.02
    assert queue.admit(0.03) and not queue.shedding
    # a standing queue: every call of an interval waited longer than the target
    for _ in range(3):
        assert queue.admit(0.02)
        now[0] += 0.02
    assert not queue.admit(0.02) and queue.shedding
    assert queue.admit(0.008)  # under the target: served
    assert queue.admit(None)  # a call that did not say its timeout is not judged
    assert not queue.admit(0.008, share=0.5)  # a LOW call is shed at half the wait
    now[0] += 0.05
    assert queue.admit(0.001)  # the interval before still had to shed: still shedding
    assert queue.shedding
    now[0] += 0.05
    assert queue.admit(0.001) and not queue.shedding  # an interval without sheds: over


def test_limiter_sheds_on_wait_even_with_nothing_in_flight() -> None:
    now = [0.0]
    limiter = AdaptiveLimiter(queue=QueueWait(interval_s=0.05, clock=lambda: now[0]))
    assert limiter.try_acquire(Priority.NORMAL, 0.0)
    limiter.release(0.010, waited_s=0.0)
    admitted = []
    for _ in range(6):  # CPU-bound handler: one at a time, each queued 30 ms
        now[0] += 0.02
        admitted.append(limiter.try_acquire(Priority.CRITICAL, 0.03))
        if admitted[-1]:
            assert limiter.inflight == 1
            limiter.release(0.010, waited_s=0.03)
    # the first interval held the unqueued call; the second stood queued: shed from then on
    assert admitted == [True, True, True, True, True, False]
    assert limiter.try_acquire(Priority.CRITICAL, 0.005)  # a short wait is still served


def test_a_shed_call_is_told_to_come_back_when_the_work_before_it_is_done() -> None:
    class Fixed(random.Random):
        def __init__(self, share: float) -> None:
            super().__init__()
            self.share = share

        def uniform(self, a: float, b: float) -> float:
            return a + (b - a) * self.share

    now = [0.0]
    limiter = AdaptiveLimiter(queue=QueueWait(clock=lambda: now[0]))
    # it waited 400 ms: the queue in front of it drains in about that, spread x0.5..x1.5
    assert limiter.retry_after_s(0.4, Fixed(0.0)) == pytest.approx(0.2)
    assert limiter.retry_after_s(0.4, Fixed(0.5)) == pytest.approx(0.4)
    assert limiter.retry_after_s(0.4, Fixed(1.0)) == pytest.approx(0.6)
    # bounded before the jitter
    assert limiter.retry_after_s(0.0001, Fixed(0.5)) == MIN_RETRY_S
    assert limiter.retry_after_s(30.0, Fixed(0.5)) == MAX_RETRY_S
    assert limiter.retry_after_s(30.0, Fixed(1.0)) == 1.5 * MAX_RETRY_S  # spread past it
    # everyone shed lately comes back too: 100 sheds at 10 ms of service each is a second
    # of work, however short this call's own wait; it is forgotten over SHED_MEMORY_S
    limiter.queue.served(0.010)
    now[0] = 100.0
    for _ in range(99):
        limiter.retry_after_s(0.0)
    assert limiter.retry_after_s(0.0, Fixed(0.5)) == pytest.approx(1.0)
    now[0] += 10 * SHED_MEMORY_S
    assert limiter.retry_after_s(0.0, Fixed(0.5)) == MIN_RETRY_S
    # a wait unknown: the in-flight calls' service
    limiter.inflight = int(limiter.limit) * 15
    assert limiter.retry_after_s(None, Fixed(0.5)) == pytest.approx(0.15)
    hints = {limiter.retry_after_s(0.4) for _ in range(20)}
    assert len(hints) > 1  # jittered: callers shed together come back apart


async def test_a_press_play_queues_for_a_bulkhead_slot_where_others_are_turned_away() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait_s=0.001)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFull):  # the bulkhead's own bound: turned away at once
        await bulkhead.acquire()
    queued = [asyncio.ensure_future(bulkhead.acquire(30.0, max_wait_s=30.0)) for _ in range(2)]
    await asyncio.sleep(0)  # (lets both start waiting, in order)
    assert not any(q.done() for q in queued)
    bulkhead.release()
    await queued[0]  # first come, first served
    assert not queued[1].done()
    bulkhead.release()
    await queued[1]
    with pytest.raises(BulkheadFull):  # the caller's deadline still bounds the wait
        await bulkhead.acquire(0.0, max_wait_s=30.0)
    start = POLICIES.policy("/livemesh.playback.v1.PlaybackService/StartPlayback")
    assert start.queue_s == START_QUEUE_S
    assert POLICIES.policy("/livemesh.catalog.v1.CatalogService/GetTitle").queue_s is None


def test_declared_policies() -> None:
    start = POLICIES.policy("/livemesh.playback.v1.PlaybackService/StartPlayback")
    assert start.priority is Priority.CRITICAL and not start.idempotent
    get = POLICIES.policy("/livemesh.catalog.v1.CatalogService/GetTitle")
    assert get.read_only and get.idempotent

    class Mutation:
        request_id = ""

    assert not start.retry_safe(Mutation())
    Mutation.request_id = "r-1"
    assert start.retry_safe(Mutation())


def test_server_interceptors_read_the_shedding_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    def shedders() -> list[LoadShedder]:
        (chain,) = server_interceptors()  # one interceptor: its stages run as one
        assert isinstance(chain, Chain)
        return [stage for stage in chain.stages if isinstance(stage, LoadShedder)]

    monkeypatch.setenv("LIVEMESH_SHED_WAIT_MS", "50")
    (shedder,) = shedders()
    assert shedder.limiter.queue.min_wait_s == 0.05
    monkeypatch.setenv("LIVEMESH_LOAD_SHEDDING", "off")
    assert not shedders()


def test_trace_sample_ratio_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased

    from kernel.rpc.resilience import tracing

    monkeypatch.delenv(tracing.SAMPLE_ENV, raising=False)
    assert tracing.sample_ratio() == tracing.DEFAULT_SAMPLE == 0.1
    monkeypatch.setenv(tracing.SAMPLE_ENV, "0.25")
    assert tracing.sample_ratio() == 0.25
    monkeypatch.setenv(tracing.SAMPLE_ENV, "7")
    assert tracing.sample_ratio() == 1.0
    assert isinstance(tracing.sampler(), ParentBased)
    assert "0.5" in tracing.sampler(0.5).get_description()
