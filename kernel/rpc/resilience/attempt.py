"""One attempt of a unary call on one instance, and the hedge: a second racing the first.

An attempt's outcome feeds the dependency's breaker, the balancer's outlier detection
and the method's latencies (whose p95 is when a read-only call is hedged to another
instance).  These are functions of the :class:`Dependency` they serve, read at call
time, so its parts can be swapped while calls run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import grpc

from kernel.rpc.resilience import context, metrics
from kernel.rpc.resilience.balancer import Balancer, Endpoint
from kernel.rpc.resilience.breaker import CircuitBreaker
from kernel.rpc.resilience.budget import RetryBudget
from kernel.rpc.resilience.config import ResilienceConfig
from kernel.rpc.resilience.method import Method, OnEndpoint
from kernel.rpc.resilience.outcomes import FAILURES
from kernel.rpc.resilience.policy import MethodPolicy


class Dependency(Protocol):
    """What an attempt reads of the dependency it serves
    (:class:`kernel.rpc.resilience.dependency.Dependency`), at call time."""

    name: str
    balancer: Balancer
    breaker: CircuitBreaker
    budget: RetryBudget
    config: ResilienceConfig


def hedge_after(
    dep: Dependency,
    call: Method,
    policy: MethodPolicy,
    endpoint: Endpoint,
    deadline: float,
) -> float | None:
    """When to hedge a call to ``endpoint``: after the method's p95, if it is read-only,
    another instance could take it and the deadline leaves time; None: no hedge."""
    if not (dep.config.hedging and policy.read_only):
        return None
    if not dep.balancer.has_other(endpoint.address):
        return None  # no other instance to hedge to
    p95 = call.latency.p95()
    if p95 is None or time.monotonic() + p95 >= deadline:
        return None
    return p95


async def attempt(
    dep: Dependency,
    call: Method,
    on: OnEndpoint,
    request: Any,
    endpoint: Endpoint,
    deadline: float,
    md: list[tuple[str, str]],
) -> Any:
    """One attempt on ``endpoint`` (the breaker permit is already taken)."""
    start = time.monotonic()
    timeout = max(deadline - start, 0.0)
    connection = endpoint.least_busy()
    connection.in_flight += 1
    try:
        result = await on(connection)(  # (as Metadata: gRPC's own check of a tuple is slow)
            request,
            timeout=timeout,
            metadata=grpc.aio.Metadata(*md, context.timeout_entry(timeout)),
        )
    except grpc.aio.AioRpcError as error:
        code = error.code()
        elapsed = time.monotonic() - start
        metrics.child(metrics.ATTEMPTS, dep.name, call.name, code.name).inc()
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            # shed: no verdict on the dependency's health, not even a slow one (a flash
            # crowd's shed answers came back late from a busy server and, counted as slow
            # calls, opened the breaker on a server that was working)
            dep.breaker.release()
        else:
            dep.breaker.record(code in FAILURES, elapsed)
        dep.balancer.record(endpoint, code in FAILURES)
        raise
    except BaseException:  # cancelled (a hedge's loser, or the caller gave up)
        dep.breaker.release()
        raise
    finally:
        connection.in_flight -= 1
    elapsed = time.monotonic() - start
    call.attempts_ok.inc()
    dep.breaker.record(False, elapsed)
    dep.balancer.record(endpoint, False)
    call.latency.add(elapsed)
    return result


async def hedged(
    dep: Dependency,
    call: Method,
    on: OnEndpoint,
    request: Any,
    first: Endpoint,
    deadline: float,
    md: list[tuple[str, str]],
    after_s: float,
    tried: set[str],
) -> Any:
    """First attempt now, a second on another instance after ``after_s``;
    the first answer wins and the other is cancelled."""
    tasks = {asyncio.ensure_future(attempt(dep, call, on, request, first, deadline, md))}
    try:
        done, _ = await asyncio.wait(tasks, timeout=after_s)
        if done:
            return done.pop().result()
        other = dep.balancer.pick(tried | {first.address})
        if other is not None and dep.budget.try_spend():
            if dep.breaker.try_acquire():
                tried.add(other.address)
                metrics.child(metrics.HEDGES, dep.name, call.name).inc()
                tasks.add(
                    asyncio.ensure_future(attempt(dep, call, on, request, other, deadline, md))
                )
        elif other is not None:
            metrics.BUDGET_EXHAUSTED.labels(dep.name).inc()
        error: BaseException | None = None
        while tasks:
            done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # every finished attempt's outcome is read, the loser's error too: both can end
            # in one wait, and a task's error nobody read is logged as never retrieved
            errors = {task: task.exception() for task in done}
            for task, failed in errors.items():
                if failed is None:
                    return task.result()
                error = failed
        assert error is not None
        raise error
    finally:
        for task in tasks:  # the loser still running: its outcome, once cancelled, is read
            task.cancel()
            task.add_done_callback(_read_outcome)


def _read_outcome(task: asyncio.Future[Any]) -> None:
    """Read a cancelled attempt's error, if it ended with one instead (so asyncio does not
    log it as never retrieved); the breaker and balancer have counted it already."""
    if not task.cancelled():
        task.exception()
