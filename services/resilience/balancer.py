"""Client-side load balancing over the instances of one dependency: round robin over
the healthy ones, active health checks (the standard gRPC health service), and
ejection of outliers (consecutive failures, as Envoy's outlier detection).

Instances come from a resolver: a fixed list (``host:port[,host:port…]``) or the
registry (``registry:///<service>``, followed through the ``WatchInstances`` stream:
a snapshot, then every change as it happens; when the registry is unreachable the
last snapshot stays in use while the watch reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.resilience import metrics

log = logging.getLogger(__name__)

Connect = Callable[[str], grpc.aio.Channel]


def _background(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task in a fresh context: the first channel is often made inside a handler, and
    the watch or health checks must not inherit that call's deadline, priority or span."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())


@dataclass
class Outliers:
    """Ejection rule (pure): ``consecutive`` failures eject an instance for
    ``base_s * times ejected`` (capped), never more than ``max_fraction`` of them."""

    consecutive: int = 5
    base_s: float = 2.0
    max_s: float = 30.0
    max_fraction: float = 0.5


@dataclass
class Endpoint:
    address: str
    channel: grpc.aio.Channel
    healthy: bool = True
    failures: int = 0  # consecutive
    ejected_until: float = 0.0
    ejections: int = 0

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


@dataclass
class Balancer:
    dependency: str
    connect: Connect
    outliers: Outliers = field(default_factory=Outliers)
    health_interval_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)
    _next: int = 0
    _health_task: asyncio.Task[None] | None = None
    _resolver_task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set at every new set
    resolve_errors: int = 0
    resolve_failed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_addresses(self, addresses: list[str]) -> None:
        """Follow the resolver: connect new instances, drop (and close) gone ones."""
        wanted = list(dict.fromkeys(addresses))
        for address in wanted:
            if address not in self.endpoints:
                self.endpoints[address] = Endpoint(address, self.connect(address))
        for address in list(self.endpoints):
            if address not in wanted:
                gone = self.endpoints.pop(address)
                asyncio.get_running_loop().create_task(gone.channel.close(grace=1.0))
        self._order = wanted
        self.changed.set()
        if wanted:
            self.ready.set()
        if len(wanted) > 1 and self._health_task is None:
            self._health_task = _background(self._check_forever())

    def pick(self, exclude: set[str] | frozenset[str] = frozenset()) -> Endpoint | None:
        """The next available instance not in ``exclude``; if none is available, any
        instance not excluded (better a doubtful one than none); None if all are."""
        now = self.clock()
        order = self._order
        for _ in range(len(order)):
            address = order[self._next % len(order)]
            self._next += 1
            if address not in exclude:
                endpoint = self.endpoints[address]
                if endpoint.available(now):
                    return endpoint
        candidates = [a for a in order if a not in exclude]
        return self.endpoints[candidates[self._next % len(candidates)]] if candidates else None

    def has_other(self, address: str) -> bool:
        now = self.clock()
        return any(e.available(now) for a, e in self.endpoints.items() if a != address)

    def record(self, endpoint: Endpoint, failed: bool) -> None:
        """Passive health: count consecutive failures, eject outliers."""
        if not failed:
            endpoint.failures = 0
            return
        endpoint.failures += 1
        if endpoint.failures < self.outliers.consecutive:
            return
        now = self.clock()
        ejected = sum(1 for e in self.endpoints.values() if now < e.ejected_until)
        if (ejected + 1) > self.outliers.max_fraction * len(self.endpoints):
            return
        endpoint.ejections += 1
        endpoint.failures = 0
        endpoint.ejected_until = now + min(
            self.outliers.max_s, self.outliers.base_s * endpoint.ejections
        )
        metrics.EJECTIONS.labels(self.dependency).inc()
        log.warning("%s: ejected %s for %.1f s", self.dependency, endpoint.address,
                    endpoint.ejected_until - now)

    async def _check_forever(self) -> None:
        request = health_pb2.HealthCheckRequest(service="")
        while True:
            for endpoint in list(self.endpoints.values()):
                stub = health_pb2_grpc.HealthStub(endpoint.channel)
                try:
                    reply = await stub.Check(request, timeout=self.health_interval_s / 2)
                    endpoint.healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.aio.AioRpcError as error:
                    # UNIMPLEMENTED: the server has no health service; do not hold it against it
                    endpoint.healthy = error.code() is grpc.StatusCode.UNIMPLEMENTED
            await asyncio.sleep(self.health_interval_s)

    def follow(self, watch: Callable[[], AsyncIterator[list[str]]], retry_s: float) -> None:
        """Keep the instances ``watch()`` yields (each a whole, non-empty set replaces
        the last); when the stream fails, keep the last set and watch again after
        ``retry_s`` (at once after a stream that had worked)."""

        async def loop() -> None:
            while True:
                delivered = False
                try:
                    async for addresses in watch():
                        delivered = True
                        if addresses:
                            self.set_addresses(addresses)
                except grpc.aio.AioRpcError as error:
                    self.resolve_errors += 1
                    self.resolve_failed.set()
                    log.warning("%s: registry watch failed (%s); keeping the last snapshot",
                                self.dependency, error.code().name)
                if not delivered:
                    await asyncio.sleep(retry_s)

        self._resolver_task = _background(loop())

    async def close(self) -> None:
        for task in (self._health_task, self._resolver_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for endpoint in self.endpoints.values():
            await endpoint.channel.close()
        self.endpoints.clear()
        self._order = []
