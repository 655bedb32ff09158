"""Client-side load balancing over the instances of one dependency: round robin over
the healthy ones, active health checks (the standard gRPC health service), and
ejection of outliers (consecutive failures, as Envoy's outlier detection).

Each instance is reached over several connections (:data:`CONNECTIONS`), each call on the
one with the fewest calls in flight: an instance may be a group of processes sharing its
port (SO_REUSEPORT, :mod:`kernel.workers`), where the kernel hands each new connection to
one of them, so a single connection would load one process of the group and leave the
others idle; a connection to a busier process holds its calls longer and is chosen less.

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

from kernel.rpc.resilience import metrics
from kernel.rpc.resilience.split import SmoothWeighted, SplitFile, Weights

log = logging.getLogger(__name__)

Connect = Callable[[str], grpc.aio.Channel]  # one new connection (channel) per call
# connections per instance: with 2 processes behind a port, 8 leave one of them without a
# connection once in 128 (2 * 2**-8); an idle HTTP/2 connection costs next to nothing
CONNECTIONS = 8


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


@dataclass(eq=False)
class Connection:
    """One connection to an instance, the calls in flight on it, and the multi-callables
    made on it (by method, each made once)."""

    channel: grpc.aio.Channel
    in_flight: int = 0
    callables: dict[object, Any] = field(default_factory=dict)


@dataclass
class Endpoint:
    address: str
    connections: list[Connection]
    healthy: bool = True
    failures: int = 0  # consecutive
    ejected_until: float = 0.0
    ejections: int = 0
    _turn: int = 0

    @property
    def channel(self) -> grpc.aio.Channel:
        """The first connection's channel: the instance's health checks."""
        return self.connections[0].channel

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def least_busy(self) -> Connection:
        """The connection with the fewest calls in flight, the first such from a start that
        turns with each call (so an idle instance's calls go round all of them)."""
        connections = self.connections
        self._turn = start = (self._turn + 1) % len(connections)
        best = connections[start]
        for connection in connections[start + 1 :] + connections[:start]:
            if connection.in_flight < best.in_flight:
                best = connection
        return best

    async def close(self, grace: float | None = None) -> None:
        for connection in self.connections:
            await connection.channel.close(grace)


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
    # a weighted split (a canary): extra instances from the split file, picked by weight
    split: SplitFile | None = None
    _base: list[str] = field(default_factory=list)
    _extra: Weights = field(default_factory=dict)
    _smooth: SmoothWeighted = field(default_factory=SmoothWeighted)

    def set_addresses(self, addresses: list[str]) -> None:
        """Follow the resolver: connect new instances, drop (and close) gone ones."""
        self._base = list(addresses)
        self._connect_all([*addresses, *self._extra])

    def _follow_split(self) -> None:
        """Take the split file's extra instances of this dependency when they change."""
        assert self.split is not None
        extra = self.split.extra(self.dependency)
        if extra != self._extra:
            self._extra = dict(extra)
            self._connect_all([*self._base, *extra])

    def _connect_all(self, addresses: list[str]) -> None:
        wanted = list(dict.fromkeys(addresses))
        for address in wanted:
            if address not in self.endpoints:
                connections = [Connection(self.connect(address)) for _ in range(CONNECTIONS)]
                self.endpoints[address] = Endpoint(address, connections)
        for address in list(self.endpoints):
            if address not in wanted:
                gone = self.endpoints.pop(address)
                asyncio.get_running_loop().create_task(gone.close(grace=1.0))
        self._order = wanted
        self.changed.set()
        if wanted:
            self.ready.set()
        if len(wanted) > 1 and self._health_task is None:
            self._health_task = _background(self._check_forever())

    def pick(self, exclude: set[str] | frozenset[str] = frozenset()) -> Endpoint | None:
        """The next available instance not in ``exclude``; if none is available, any
        instance not excluded (better a doubtful one than none); None if all are.
        With a split, by smooth weighted round robin instead of plain round robin."""
        now = self.clock()
        if self.split is not None:
            self._follow_split()
        if self._extra:
            return self._weighted(now, exclude)
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

    def _weighted(self, now: float, exclude: set[str] | frozenset[str]) -> Endpoint | None:
        candidates = [a for a in self._order if a not in exclude]
        if exclude:  # a retry or a hedge: the split is of first attempts; these go to the
            # resolved instances only (a hedge would send a canary the p95 tail of every
            # call, ten times its share; a retry after its failure must not go back to it)
            candidates = [a for a in candidates if a not in self._extra]
        if not candidates:
            return None
        available = [a for a in candidates if self.endpoints[a].available(now)] or candidates
        return self.endpoints[self._smooth.choose(available, self._extra)]

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
        log.warning(
            "%s: ejected %s for %.1f s",
            self.dependency,
            endpoint.address,
            endpoint.ejected_until - now,
        )

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
                    log.warning(
                        "%s: registry watch failed (%s); keeping the last snapshot",
                        self.dependency,
                        error.code().name,
                    )
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
            await endpoint.close()
        self.endpoints.clear()
        self._order = []
