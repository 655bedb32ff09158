"""The cache node (DESIGN.md §5): edge or shield, by its parent list.

Request path: token check (no I/O) → cache key (the path without the token and the
query) → fresh object: answered in place; stale but within stale-while-revalidate:
answered in place and revalidated in the background; in flight: joined; else a new
:class:`~edge.fill.Fill`, fetched once from the parents by :class:`~edge.upstream.Upstream`.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from edge import ranges
from edge.fill import Fill
from edge.http import CORS, Connection, HttpServer, Limits, Request, status_line
from edge.membership import Load, Membership, MembershipConfig, hot_channels
from edge.metrics import Counters, render
from edge.policy import CachePolicy, decide
from edge.store import Store
from edge.upstream import HOLD_EXPIRED, HOLD_HEADER, Upstream, UpstreamConfig
from livemesh import clock
from livemesh.heap import settle_heap
from livemesh.tokens import TokenError, TokenSigner, path_is_clean, split_token

log = logging.getLogger("edge")

CACHED_ROOTS = ("/live/", "/vod/")
PREPOSITION_PATH = "/admin/preposition"
MAX_PREPOSITION_PATHS = 1000
PREPOSITION_CONCURRENCY = 8
# A hit whose head and body together are this small is sent as one buffer: one copy, and
# the transport's direct-write path instead of its buffered writelines (bench/edge_cached.py).
SMALL_WRITE_BYTES = 16 << 10
# Accepted request targets remembered with their verdict (cache key, and until when their
# token holds): a repeated target skips the path checks and the token's HMAC.
ROUTE_CACHE_ENTRIES = 4096
ROUTE_TARGET_MAX = 1024
HIT = b"X-Cache: HIT\r\n"
INF = float("inf")


@dataclass(frozen=True)
class NodeConfig:
    name: str = "edge"
    parents: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    cache_bytes: int = 512 << 20
    tokens_required: bool = True
    token_keys: str | None = None  # "kid:hex,..."; None: LIVEMESH_TOKEN_KEYS or the dev key
    admin_key: str | None = None  # bearer secret for pre-positioning; None disables it
    allowed_hosts: tuple[str, ...] = ()  # empty: any Host
    negative_ttl_max_s: float = 0.2  # one chunk duration
    mpd_stale_s: float = 2.0  # stale-while-revalidate for manifests the parent sent without one
    connect_timeout_s: float = 1.0
    head_timeout_s: float = 5.0  # for a request no parent holds
    hold_s: float = 4.0  # longest the origin holds the next segment (2·D)
    hold_margin_s: float = 1.0  # what each tier adds to the wait for a held request
    stall_timeout_s: float = 3.0
    drain_timeout_s: float = 30.0
    registry: str | None = None  # host:port of the registry service; None: not registered
    tier: str = "edge"  # the registry service name: "edge" or "shield"
    region: str = "local"
    public_url: str | None = None  # how viewers reach this node (default: its listen address)
    capacity_connections: int = 10_000  # load 1.0 in heartbeats
    limits: Limits = field(default_factory=Limits)


class _Keeper:
    """The node's own subscriber on each fill: files it in the store, forgets it when done."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node

    def on_head(self, fill: Fill) -> None:
        node = self.node
        if fill.policy.store:
            node.store.put(fill)
        elif node.inflight.get(fill.key) is fill:
            del node.inflight[fill.key]  # never cached: later requests fetch for themselves

    def on_data(self, fill: Fill, data: bytes) -> None:
        pass

    def on_end(self, fill: Fill) -> None:
        if self.node.inflight.get(fill.key) is fill:
            del self.node.inflight[fill.key]
        if len(fill.chunks) > 1:  # one piece per stored object: one iovec per hit
            fill.chunks = [b"".join(fill.chunks)]

    def on_error(self, fill: Fill) -> None:
        self.on_end(fill)
        if self.node.store.peek(fill.key) is fill:
            self.node.store.remove(fill.key)


class _Responder:
    """One request waiting on a fill still in flight: streams its bytes as they arrive."""

    __slots__ = ("chunked", "conn", "head_only", "node", "started")

    def __init__(self, node: EdgeNode, conn: Connection, req: Request) -> None:
        self.node = node
        self.conn = conn
        self.head_only = req.method == b"HEAD"
        self.chunked = False
        self.started = False

    def attach(self, fill: Fill) -> None:
        self.conn.on_lost = lambda: fill.unsubscribe(self)
        if fill.head:
            self.on_head(fill)
            if self.head_only:
                return
            if fill.chunks:
                self._send(b"".join(fill.chunks) if len(fill.chunks) > 1 else fill.chunks[0])
        fill.subscribe(self)

    def on_head(self, fill: Fill) -> None:
        conn = self.conn
        self.started = True
        parts = [status_line(fill.status), self.node.object_headers(fill)]
        if fill.length is not None:
            parts.append(b"Content-Length: %d\r\n" % fill.length)
        elif conn.http11:
            self.chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            conn.keep_alive = False
        parts += [b"X-Cache: MISS\r\n", conn.server.date_header, conn.connection_header(), b"\r\n"]
        if self.head_only:
            if self.chunked:
                parts.append(b"0\r\n\r\n")
            conn.writelines(parts)
            fill.unsubscribe(self)
            conn.finish()
            return
        conn.writelines(parts)

    def _send(self, data: bytes) -> None:
        if self.chunked:
            self.conn.write(self.node.chunk_frame(data))
        else:
            self.conn.write(data)
        self.node.counters.bytes_out += len(data)

    def on_data(self, fill: Fill, data: bytes) -> None:
        self._send(data)
        if self.conn.too_far_behind():
            fill.unsubscribe(self)
            self.conn.abort()

    def on_end(self, fill: Fill) -> None:
        if self.chunked:
            self.conn.write(b"0\r\n\r\n")
        self.conn.finish()

    def on_error(self, fill: Fill) -> None:
        if self.started:
            self.conn.abort()  # the client must see a truncated body, never a short one
        else:
            failed(self.conn, fill)


HELD_EXPIRED_EXTRA = f"{HOLD_HEADER}: {HOLD_EXPIRED}\r\nCache-Control: no-store\r\n".encode()


def failed(conn: Connection, fill: Fill) -> None:
    """Answer a request whose fill failed before its head: the encoder is late (503, marked
    so a child node passes it on instead of failing over), or no parent could serve it."""
    if fill.held:
        conn.simple(503, b"segment not produced in time\n", extra=HELD_EXPIRED_EXTRA)
    else:
        conn.simple(502, b"upstream unavailable\n")


class EdgeNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.store = Store(config.cache_bytes)
        self.inflight: dict[str, Fill] = {}
        self.counters = Counters()
        keys = config.token_keys
        self.signer = TokenSigner.from_spec(keys) if keys else TokenSigner.from_env()
        self.upstream = Upstream(
            UpstreamConfig(
                parents=config.parents,
                fallbacks=config.fallbacks,
                connect_timeout_s=config.connect_timeout_s,
                head_timeout_s=config.head_timeout_s,
                stall_timeout_s=config.stall_timeout_s,
                hold_s=config.hold_s,
                hold_margin_s=config.hold_margin_s,
            ),
            self._decide,
            self.loop.time,
        )
        self.server = HttpServer(self, config.limits)
        self.allowed_hosts = {h.encode().lower() for h in config.allowed_hosts}
        self._keeper = _Keeper(self)
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.membership: Membership | None = None
        self._frame_of: bytes | None = None  # the piece last framed for chunked transfer
        self._routes: dict[bytes, tuple[str, float | None]] = {}
        self._frame = b""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        await self.upstream.start()
        self.port = await self.server.start(host, port)
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
        counters = self.counters
        counters.requests += 1
        hosts = self.allowed_hosts
        if hosts and (req.host or b"").split(b":")[0].lower() not in hosts:
            counters.bad_requests += 1
            conn.simple(421, b"unknown host\n")
            return
        target = req.target
        method = req.method
        if method == b"GET" or method == b"HEAD":
            route = self._routes.get(target)
            if route is not None:
                key, until = route
                if until is None or clock.now_s() < until:
                    self.serve(conn, req, key)
                    return
                del self._routes[target]  # its token has expired: checked again in full
        self._check(conn, req, target, method)

    def _check(self, conn: Connection, req: Request, target: bytes, method: bytes) -> None:
        """Every check of a target not remembered: path, method, token; then serve it."""
        counters = self.counters
        query = target.find(b"?")
        raw_path = target if query < 0 else target[:query]
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            counters.bad_requests += 1
            conn.simple(400, b"bad path\n")
            return
        if method == b"OPTIONS":
            conn.simple(
                204,
                extra=b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
                b"Access-Control-Allow-Headers: Range\r\nAccess-Control-Max-Age: 86400\r\n",
            )
            return
        token, path = split_token(path)
        if "%" in path or not path_is_clean(path):
            counters.bad_requests += 1
            conn.simple(400, b"bad path\n")
            return
        if not path.startswith(CACHED_ROOTS):
            self._local(conn, req, path)
            return
        if method != b"GET" and method != b"HEAD":
            conn.simple(405, extra=b"Allow: GET, HEAD, OPTIONS\r\n")
            return
        until: float | None = None
        if token is not None or self.config.tokens_required:
            try:
                claims = self.signer.verify(token or "", path)
            except TokenError as exc:
                counters.token_rejections += 1
                conn.simple(403, f"token: {exc.reason}\n".encode())
                return
            until = float(claims.expires_s)  # verify() refuses it from this instant on
        self._remember(target, path, until)
        self.serve(conn, req, path)

    def _remember(self, target: bytes, key: str, until: float | None) -> None:
        """Remember an accepted target's verdict; the oldest goes when the table is full."""
        if len(target) > ROUTE_TARGET_MAX:
            return
        routes = self._routes
        if len(routes) >= ROUTE_CACHE_ENTRIES:
            del routes[next(iter(routes))]
        routes[target] = (key, until)

    def serve(self, conn: Connection, req: Request, key: str) -> None:
        fill = self.store.get(key)
        if fill is not None:
            expires = fill.expires
            if expires == INF:  # immutable: fresh whatever the time
                self.counters.hits += 1
                self._answer(conn, req, fill, 0.0, HIT)
                return
            now = self.loop.time()
            if now < expires:
                self.counters.hits += 1
                self._answer(conn, req, fill, now, HIT)
                return
            if fill.done and fill.error is None and now < fill.stale_until:
                self.counters.stale_hits += 1
                if key not in self.inflight:
                    self._start_fill(key)
                self._answer(conn, req, fill, now, b"X-Cache: STALE\r\n")
                return
        fill = self.inflight.get(key)
        if fill is None:
            self.counters.misses += 1
            fill = self._start_fill(key, self._asker_wait(req))
        else:
            self.counters.collapsed += 1
        self._answer(conn, req, fill, self.loop.time(), b"X-Cache: MISS\r\n")

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
        task = self.loop.create_task(self.upstream.run(fill, key, wait_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    def chunk_frame(self, data: bytes) -> bytes:
        """``data`` as one HTTP/1.1 chunk, framed once for all the waiters it goes to."""
        if data is not self._frame_of:
            self._frame_of = data
            self._frame = b"%x\r\n%b\r\n" % (len(data), data)
        return self._frame

    def object_headers(self, fill: Fill) -> bytes:
        """The stored headers of an object as wire bytes, rendered once per object."""
        if not fill.wire_head:
            lines = [f"{name.title()}: {value}\r\n".encode() for name, value in fill.headers]
            fill.wire_head = b"".join([*lines, CORS, b"Accept-Ranges: bytes\r\n"])
        return fill.wire_head

    def _answer(self, conn: Connection, req: Request, fill: Fill, now: float, tag: bytes) -> None:
        if not fill.done or fill.error is not None:
            if fill.done:
                failed(conn, fill)
                return
            _Responder(self, conn, req).attach(fill)
            return
        if tag is HIT and req.range is None and conn.keep_alive:
            self._send(conn, req, self._hit_head(conn, fill, now), fill.chunks, fill.size)
            return
        size = fill.size
        status = fill.status
        body: list[bytes] | list[memoryview] = fill.chunks
        extra = b""
        if req.range is not None and status == 200:
            try:
                span = ranges.parse(req.range, size)
            except ranges.Unsatisfiable:
                conn.simple(416, extra=b"Content-Range: bytes */%d\r\n" % size)
                return
            if span is not None:
                first, last = span
                status = 206
                body = ranges.slices(fill.chunks, first, last)
                extra = b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, size)
                size = last - first + 1
        age = -1 if fill.policy.immutable else int(now - fill.born)
        date = conn.server.date_header
        head = self._head(fill, status, size, extra, age, tag, date, conn.connection_header())
        self._send(conn, req, head, body, size)

    def _head(
        self,
        fill: Fill,
        status: int,
        size: int,
        extra: bytes,
        age: int,
        tag: bytes,
        date: bytes,
        connection: bytes,
    ) -> bytes:
        return b"".join(
            (
                status_line(status) if status != 200 else b"HTTP/1.1 200 OK\r\n",
                self.object_headers(fill),
                b"Content-Length: %d\r\n" % size,
                extra,
                b"" if age < 0 else b"Age: %d\r\n" % age,
                tag,
                date,
                connection,
                b"\r\n",
            )
        )

    def _hit_head(self, conn: Connection, fill: Fill, now: float) -> bytes:
        """The head of a whole fresh object on a keep-alive connection: built once per second
        (the Date line; the Age of a mutable object) and shared by every hit in between."""
        date = conn.server.date_header
        age = -1 if fill.policy.immutable else int(now - fill.born)
        if fill.hit_date is not date or fill.hit_age != age:
            fill.hit_head = self._head(fill, fill.status, fill.size, b"", age, HIT, date, b"")
            fill.hit_date = date
            fill.hit_age = age
        return fill.hit_head

    def _send(
        self,
        conn: Connection,
        req: Request,
        head: bytes,
        body: list[bytes] | list[memoryview],
        size: int,
    ) -> None:
        if req.method == b"HEAD":
            conn.write(head)
        else:
            if len(body) == 1 and size <= SMALL_WRITE_BYTES:
                conn.write(head + body[0])
            else:
                conn.writelines([head, *body])
            self.counters.bytes_out += size
        conn.finish()

    # -- local endpoints ---------------------------------------------------------------

    def _local(self, conn: Connection, req: Request, path: str) -> None:
        if path == "/time":
            now_ms = clock.now_ms()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms // 1000))
            body = f"{stamp}.{now_ms % 1000:03d}Z".encode()
            conn.simple(200, body, extra=b"Cache-Control: no-store\r\n")
        elif path == "/metrics":
            conn.simple(
                200,
                self.metrics_text(),
                extra=b"Cache-Control: no-store\r\n",
                content_type=b"text/plain; version=0.0.4",
            )
        elif path == "/healthz":
            if self.server.draining:
                conn.simple(503, b"draining\n")
            else:
                conn.simple(200, b"ok\n", extra=b"Cache-Control: no-store\r\n")
        elif path == PREPOSITION_PATH:
            self._preposition(conn, req)
        else:
            conn.simple(404, b"not found\n")

    def metrics_text(self) -> bytes:
        stats = self.upstream.stats
        gauges = {
            "cache_bytes": lambda: float(self.store.bytes),
            "cache_max_bytes": lambda: float(self.store.max_bytes),
            "cache_objects": lambda: float(len(self.store)),
            "cache_evictions": lambda: float(self.store.evictions),
            "inflight_fills": lambda: float(len(self.inflight)),
            "connections": lambda: float(len(self.server.connections)),
            "draining": lambda: float(self.server.draining),
        }
        upstream = {
            "fetches": stats.fetches,
            "errors": stats.errors,
            "failovers": stats.failovers,
            "holds_expired": stats.holds_expired,
            "resumed": stats.resumed,
            "bytes": stats.bytes_in,
        }
        return render(
            self.config.name,
            self.counters,
            gauges,
            {k: float(v) for k, v in upstream.items()},
            stats.per_parent,
        )

    def hit_ratio(self) -> float:
        c = self.counters
        served = c.hits + c.stale_hits + c.misses + c.collapsed
        return (c.hits + c.stale_hits + c.collapsed) / served if served else 0.0

    # -- pre-positioning -------------------------------------------------------------------

    def _preposition(self, conn: Connection, req: Request) -> None:
        if req.method != b"POST":
            conn.simple(405, extra=b"Allow: POST\r\n")
            return
        secret = self.config.admin_key
        given = (req.authorization or b"").removeprefix(b"Bearer ").strip()
        if not secret or not hmac.compare_digest(given, secret.encode()):
            conn.simple(403, b"forbidden\n")
            return
        try:
            paths = parse_preposition(bytes(req.body or b""))
        except ValueError as exc:
            conn.simple(400, f"{exc}\n".encode())
            return
        task = self.loop.create_task(self._run_preposition(conn, paths))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_preposition(self, conn: Connection, paths: list[str]) -> None:
        gate = asyncio.Semaphore(PREPOSITION_CONCURRENCY)

        async def one(path: str) -> tuple[str, int]:
            async with gate:
                fill = await self.prefetch(path)
                return path, (502 if fill.error else fill.status)

        results = dict(await asyncio.gather(*(one(p) for p in paths)))
        self.counters.prepositioned += sum(1 for s in results.values() if s == 200)
        body = json.dumps({"results": results}).encode()
        conn.simple(200, body, content_type=b"application/json")

    async def prefetch(self, key: str) -> Fill:
        """Fill ``key`` into the cache (or join its fill) and wait until it is whole."""
        now = self.loop.time()
        fill = self.store.get(key)
        if fill is not None and fill.complete and now < fill.expires:
            return fill
        fill = self.inflight.get(key) or self._start_fill(key)
        if not fill.done:
            waiter = _Waiter(self.loop)
            fill.subscribe(waiter)
            await waiter.done
        return fill


class _Waiter:
    """A subscriber that only wants to know when the fill is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()

    def on_head(self, fill: Fill) -> None:
        pass

    def on_data(self, fill: Fill, data: bytes) -> None:
        pass

    def on_end(self, fill: Fill) -> None:
        if not self.done.done():
            self.done.set_result(None)

    on_error = on_end


def parse_preposition(body: bytes) -> list[str]:
    """``{"paths": ["/vod/x/init.mp4", ...]}`` → the clean, cacheable paths, or ValueError."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ValueError("body is not JSON") from exc
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, list) or not paths:
        raise ValueError('expected {"paths": [...]}')
    if len(paths) > MAX_PREPOSITION_PATHS:
        raise ValueError(f"at most {MAX_PREPOSITION_PATHS} paths")
    for path in paths:
        if not isinstance(path, str) or not path_is_clean(path) or "%" in path:
            raise ValueError(f"bad path {str(path)[:100]!r}")
        if not path.startswith(CACHED_ROOTS):
            raise ValueError(f"not a cacheable path {path[:100]!r}")
    return list(dict.fromkeys(paths))


# -- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livemesh edge", description="Run an edge or shield cache node."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--name", default=None, help="node name in metrics and the registry")
    p.add_argument(
        "--parent",
        action="append",
        default=[],
        metavar="URL",
        help="a parent (shield or origin); repeat: objects spread by rendezvous hashing",
    )
    p.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="URL",
        help="tried in the given order after every --parent failed (e.g. the origin)",
    )
    p.add_argument("--cache-bytes", type=int, default=512 << 20)
    p.add_argument(
        "--no-tokens",
        action="store_true",
        help="serve without tokens (a shield behind edges); given tokens are checked",
    )
    p.add_argument(
        "--token-keys",
        default=None,
        help="kid:hexsecret,... (default: $LIVEMESH_TOKEN_KEYS, else the dev key)",
    )
    p.add_argument(
        "--admin-key",
        default=os.environ.get("LIVEMESH_EDGE_ADMIN_KEY"),
        help="bearer secret for POST /admin/preposition ($LIVEMESH_EDGE_ADMIN_KEY)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="accept only these Host names (repeat); default any",
    )
    p.add_argument(
        "--negative-ttl",
        type=float,
        default=0.2,
        help="longest a 404/410 is cached, seconds (one chunk duration)",
    )
    p.add_argument(
        "--mpd-stale",
        type=float,
        default=2.0,
        help="serve a manifest this long past its max-age while revalidating",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=5.0,
        help="wait this long for a parent's response head to a request no parent holds "
        "(a live segment may be held: --hold plus 2 x --hold-margin)",
    )
    p.add_argument(
        "--hold",
        type=float,
        default=4.0,
        help="longest the origin holds a request for the next segment (2 segment durations)",
    )
    p.add_argument(
        "--hold-margin",
        type=float,
        default=1.0,
        help="what each tier adds to the wait for a held segment's head",
    )
    p.add_argument("--stall-timeout", type=float, default=3.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--client-head-timeout", type=float, default=10.0)
    p.add_argument(
        "--registry",
        default=os.environ.get("LIVEMESH_REGISTRY"),
        help="registry service host:port; register and heartbeat there",
    )
    p.add_argument("--tier", choices=("edge", "shield"), default="edge")
    p.add_argument("--region", default="local")
    p.add_argument("--public-url", default=None, help="the URL viewers use for this node")
    p.add_argument("--capacity", type=int, default=10_000, help="connections at load 1.0")
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    if not args.parent and not args.fallback:
        raise SystemExit("livemesh edge: give at least one --parent")
    return NodeConfig(
        name=args.name or f"edge-{args.port}",
        parents=tuple(args.parent),
        fallbacks=tuple(args.fallback),
        cache_bytes=args.cache_bytes,
        tokens_required=not args.no_tokens,
        token_keys=args.token_keys,
        admin_key=args.admin_key,
        allowed_hosts=tuple(args.allowed_host),
        negative_ttl_max_s=args.negative_ttl,
        mpd_stale_s=args.mpd_stale,
        head_timeout_s=args.head_timeout,
        hold_s=args.hold,
        hold_margin_s=args.hold_margin,
        stall_timeout_s=args.stall_timeout,
        drain_timeout_s=args.drain_timeout,
        limits=Limits(head_timeout_s=args.client_head_timeout),
        registry=args.registry,
        tier=args.tier,
        region=args.region,
        public_url=args.public_url,
        capacity_connections=args.capacity,
    )


async def serve(config: NodeConfig, host: str, port: int) -> None:
    node = EdgeNode(config)
    bound = await node.start(host, port)
    log.info(
        "%s listening on http://%s:%d (parents %s, fallbacks %s)",
        config.name,
        host,
        bound,
        ",".join(config.parents) or "-",
        ",".join(config.fallbacks) or "-",
    )
    stop = asyncio.Event()
    how = {"drain": False}
    loop = asyncio.get_running_loop()

    def on_signal(drain: bool) -> None:
        how["drain"] = drain
        stop.set()

    loop.add_signal_handler(signal.SIGINT, on_signal, False)
    loop.add_signal_handler(signal.SIGTERM, on_signal, True)
    settle_heap()
    print(f"READY {config.name} http://{host}:{bound}", flush=True)
    await stop.wait()
    if how["drain"]:
        log.info("draining")
        await node.drain()
    await node.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    config = config_from_args(args)
    try:
        import uvloop
    except ImportError:  # the node works on the stock loop, only slower
        asyncio.run(serve(config, args.host, args.port))
    else:
        uvloop.run(serve(config, args.host, args.port))
    return 0
