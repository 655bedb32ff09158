"""The cache node (DESIGN.md §5): edge or shield, by its parent list.

Request path: :meth:`EdgeNode.handle` → access checks (:mod:`edge.access`: Host, path,
token; no I/O) → cache key (the path without the token and the query) →
:meth:`EdgeNode.serve`: fresh object: answered in place; stale but within
stale-while-revalidate: answered in place and revalidated in the background; in
flight: joined; else a new :class:`~edge.fill.Fill`, fetched once from the parents by
:class:`~edge.upstream.Upstream` → the answer (:mod:`edge.responses`).  Other paths
are the node's own endpoints: ``/time``, ``/metrics``, ``/healthz`` and the
pre-positioning API (:mod:`edge.admin`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge import metrics
from edge.access import Access
from edge.admin import PREPOSITION_PATH, Preposition
from edge.config import NodeConfig
from edge.fill import Fill
from edge.membership import Load, Membership, MembershipConfig, hot_channels
from edge.metrics import Counters, NodeCollector
from edge.policy import CachePolicy, decide
from edge.qoe import Headers, QoeRecorder, cmcd_headers
from edge.responses import HIT, MISS, STALE, Cmsd, Responses
from edge.store import Store
from edge.subscribers import Keeper, Waiter
from edge.upstream import Upstream
from kernel import clock
from kernel.cmcd import split_query
from kernel.http.cors import EDGE
from kernel.http.server import Connection, HttpServer, Request
from kernel.http.time import TIME_CACHE_CONTROL, TIME_PATH, http_iso

INF = float("inf")
NO_STORE = f"Cache-Control: {TIME_CACHE_CONTROL}\r\n".encode()
METRICS_TYPE = CONTENT_TYPE_LATEST.encode()


class EdgeNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.store = Store(config.cache_bytes)
        self.inflight: dict[str, Fill] = {}
        self.counters = Counters()
        self.access = Access(config, self.counters)
        self.upstream = Upstream(config.upstream, self._decide, self.loop.time)
        self.server = HttpServer(self, EDGE, config.limits)
        cmsd = Cmsd(config.name, self.counters, self.connections, config.capacity_connections)
        self.answer = Responses(self.counters, cmsd).answer
        self.preposition = Preposition(config.admin_key, self.prefetch, self.counters, self.spawn)
        self.metrics = metrics.registry(
            NodeCollector(config.name, self.counters, self.upstream.stats, self._gauges())
        )
        self._keeper = Keeper(self.store, self.inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.membership: Membership | None = None
        self.qoe: QoeRecorder | None = None
        if config.qoe is not None:
            self.qoe = QoeRecorder(config.name, config.region, config.qoe)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        await self.upstream.start()
        self.port = await self.server.start(host, port)
        if self.qoe is not None:
            self.spawn(self.qoe.emitter.run())
        cfg = self.config
        if cfg.registry:
            self.membership = Membership(
                MembershipConfig(
                    registry=cfg.registry,
                    instance_id=cfg.name,
                    service=cfg.tier,
                    address=cfg.public_url or f"http://{host}:{self.port}",
                    region=cfg.region,
                    labels={"tier": cfg.tier},
                ),
                self.load,
            )
            self.membership.start()
        return self.port

    def connections(self) -> int:
        return len(self.server.connections)

    def load(self) -> Load:
        """What the registry hears in each heartbeat."""
        connections = len(self.server.connections)
        return Load(
            load=min(1.0, connections / max(1, self.config.capacity_connections)),
            serving=not self.server.draining,
            content=hot_channels(list(self.store.protected)[-256:]),
            labels={
                "connections": str(connections),
                "egress_bytes": str(self.counters.bytes_out),
                "hit_ratio": f"{self.hit_ratio():.3f}",
            },
        )

    async def drain(self) -> None:
        """Stop taking viewers (registry first, then the listener); finish the streaming ones."""
        self.server.draining = True
        if self.membership is not None:
            await self.membership.drain()
        await self.server.drain(self.config.drain_timeout_s)

    async def close(self) -> None:
        if self.membership is not None:
            await self.membership.close()
        await self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.close()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the node cancels when it closes."""
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- policy ------------------------------------------------------------------------

    def _decide(self, path: str, status: int, cache_control: str | None, age: float) -> CachePolicy:
        swr = self.config.mpd_stale_s if path.endswith(".mpd") else 0.0
        return decide(
            status,
            cache_control,
            age,
            negative_ttl_max_s=self.config.negative_ttl_max_s,
            default_swr_s=swr,
        )

    # -- request handling ----------------------------------------------------------------

    def handle(self, conn: Connection, req: Request) -> None:
        self.counters.requests += 1
        access = self.access
        if access.allowed_hosts and access.host_refused(conn, req):
            return
        cmcd_query: bytes | None = None
        if b"CMCD=" in req.target:  # telemetry: never part of the cache key or the route
            req.target, cmcd_query = split_query(req.target)
        if self.qoe is not None:
            headers = cmcd_headers(req)
            if cmcd_query is not None or headers is not None:
                self._handle_observed(conn, req, self.qoe, (cmcd_query, headers))
                return
        self._handle(conn, req)

    def _handle_observed(
        self,
        conn: Connection,
        req: Request,
        qoe: QoeRecorder,
        cmcd: tuple[bytes | None, Headers | None],
    ) -> None:
        """Answer a request that carries CMCD, then note it for its QoE event (a target too
        long to be remembered as a route is answered and not noted)."""
        started = self.loop.time()
        self._handle(conn, req)
        route = self.access.routes.get(req.target)
        if route is not None:
            key = route[0]
            fill = self.inflight.get(key) or self.store.peek(key)
            qoe.observe(key, fill, cmcd, started, self.loop.time())

    def _handle(self, conn: Connection, req: Request) -> None:
        access = self.access
        method = req.method
        if method == b"GET" or method == b"HEAD":
            target = req.target
            route = access.routes.get(target)
            if route is not None:
                key, until = route
                if until is None or clock.now_s() < until:
                    self.serve(conn, req, key)
                    return
                del access.routes[target]  # its token has expired: checked again in full
        checked = access.check(conn, req)
        if checked is not None:
            path, cached = checked
            if cached:
                self.serve(conn, req, path)
            else:
                self._local(conn, req, path)

    def serve(self, conn: Connection, req: Request, key: str) -> None:
        fill = self.store.get(key)
        if fill is not None:
            expires = fill.expires
            if expires == INF:  # immutable: fresh whatever the time
                self.counters.hits += 1
                self.answer(conn, req, fill, 0.0, HIT)
                return
            now = self.loop.time()
            if now < expires:
                self.counters.hits += 1
                self.answer(conn, req, fill, now, HIT)
                return
            if fill.done and fill.error is None and now < fill.stale_until:
                self.counters.stale_hits += 1
                if key not in self.inflight:
                    self._start_fill(key)
                self.answer(conn, req, fill, now, STALE)
                return
        fill = self.inflight.get(key)
        if fill is None:
            self.counters.misses += 1
            fill = self._start_fill(key, self._asker_wait(req))
        else:
            self.counters.collapsed += 1
        self.answer(conn, req, fill, self.loop.time(), MISS)

    def _asker_wait(self, req: Request) -> float | None:
        """How long our parents may hold this request: a margin inside the wait of the child
        node asking (its ``Livemesh-Hold``), else a viewer's."""
        if req.hold is None:
            return None
        try:
            asker = float(req.hold)
        except ValueError:
            return None
        return self.upstream.config.nested_wait_s(asker)  # NaN, inf, < 0: clamped there

    def _start_fill(self, key: str, wait_s: float | None = None) -> Fill:
        fill = Fill(key, self.loop.time())
        fill.subscribe(self._keeper)
        self.inflight[key] = fill
        self.spawn(self.upstream.run(fill, key, wait_s))
        return fill

    async def prefetch(self, key: str) -> Fill:
        """Fill ``key`` into the cache (or join its fill) and wait until it is whole."""
        now = self.loop.time()
        fill = self.store.get(key)
        if fill is not None and fill.complete and now < fill.expires:
            return fill
        fill = self.inflight.get(key) or self._start_fill(key)
        if not fill.done:
            waiter = Waiter(self.loop)
            fill.subscribe(waiter)
            await waiter.done
        return fill

    # -- the node's own endpoints ------------------------------------------------------

    def _local(self, conn: Connection, req: Request, path: str) -> None:
        if path == TIME_PATH:
            conn.simple(200, http_iso(clock.now_ms()).encode(), extra=NO_STORE)
        elif path == "/metrics":
            conn.simple(200, self.metrics_text(), extra=NO_STORE, content_type=METRICS_TYPE)
        elif path == "/healthz":
            if self.server.draining:
                conn.error(503, "draining")
            else:
                conn.simple(200, b"ok\n", extra=NO_STORE)
        elif path == PREPOSITION_PATH:
            self.preposition.handle(conn, req)
        else:
            conn.error(404, "not found")

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics)

    def _gauges(self) -> dict[str, metrics.Read]:
        return {
            "cache_bytes": lambda: float(self.store.bytes),
            "cache_max_bytes": lambda: float(self.store.max_bytes),
            "cache_objects": lambda: float(len(self.store)),
            "cache_evictions": lambda: float(self.store.evictions),
            "inflight_fills": lambda: float(len(self.inflight)),
            "connections": lambda: float(len(self.server.connections)),
            "draining": lambda: float(self.server.draining),
            "qoe_events_sent": lambda: float(self.qoe.emitter.sent if self.qoe else 0),
            "qoe_events_dropped": lambda: float(self.qoe.emitter.dropped if self.qoe else 0),
            "cmcd_pairs_dropped": lambda: float(self.qoe.emitter.cmcd_dropped if self.qoe else 0),
        }

    def hit_ratio(self) -> float:
        c = self.counters
        served = c.hits + c.stale_hits + c.misses + c.collapsed
        return (c.hits + c.stale_hits + c.collapsed) / served if served else 0.0
