"""The cache node over real loopback HTTP, in front of scripted parent servers."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from edge import access, rendezvous
from edge.config import NodeConfig
from edge.node import EdgeNode
from edge.upstream import UpstreamConfig
from kernel import clock
from kernel.http.errors import ERROR_CACHE_CONTROL
from kernel.http.hold import HOLD_EXPIRED, HOLD_HEADER
from kernel.http.server import Limits
from kernel.tokens import TokenSigner, tokenized

KEYS = "t1:" + "ab" * 32
SEG = "/live/c/e1/v1/7.m4s"
IMMUTABLE = "public, max-age=31536000, immutable"


class Feed:
    """An object the parent publishes piece by piece; handlers stream it as it grows."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False
        self._changed = asyncio.Event()

    def push(self, data: bytes, last: bool = False) -> None:
        self.chunks.append(data)
        self.done = last
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class Parent:
    """A scripted parent: streams feeds, counts requests, can die mid-body."""

    def __init__(self) -> None:
        self.feeds: dict[str, Feed] = {}
        self.static: dict[str, tuple[int, bytes, str]] = {}
        self.marks: dict[str, dict[str, str]] = {}  # extra response headers per path
        self.requests: Counter[str] = Counter()
        self.ranges: list[str | None] = []
        self.holds: list[str | None] = []  # each request's Livemesh-Hold
        self.die_after: int | None = None  # abort the connection after this many pieces
        self.mpd_gate: asyncio.Event | None = None  # when set, manifest answers wait on it
        self.mpd_version = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        self.ranges.append(request.headers.get("Range"))
        self.holds.append(request.headers.get("Livemesh-Hold"))
        if path.endswith(".mpd"):
            if self.mpd_gate is not None:
                await self.mpd_gate.wait()
            self.mpd_version += 1
            body = f"<MPD v='{self.mpd_version}'/>".encode()
            return web.Response(body=body, headers={"Cache-Control": "public, max-age=1"})
        if path in self.static:
            status, body, cc = self.static[path]
            headers = {"Cache-Control": cc, **self.marks.get(path, {})}
            return web.Response(status=status, body=body, headers=headers)
        feed = self.feeds.get(path)
        if feed is None:
            return web.Response(status=404, headers={"Cache-Control": "max-age=60"})
        while not feed.chunks:  # held until the first chunk exists
            await feed.changed()
        resp = web.StreamResponse(headers={"Cache-Control": IMMUTABLE, "Content-Type": "video/mp4"})
        await resp.prepare(request)
        sent = 0
        while True:
            while sent < len(feed.chunks):
                await resp.write(feed.chunks[sent])
                sent += 1
                if self.die_after is not None and sent >= self.die_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
            if feed.done:
                break
            await feed.changed()
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def parent() -> AsyncIterator[Parent]:
    p = Parent()
    await p.start()
    yield p
    await p.stop()


UPSTREAM_FIELDS = set(UpstreamConfig.__dataclass_fields__)


async def start_node(**overrides: object) -> tuple[EdgeNode, str]:
    """A node with ``overrides`` for its config's fields or its upstream config's."""
    defaults: dict[str, object] = {"tokens_required": False, "token_keys": KEYS}
    upstream = {k: v for k, v in overrides.items() if k in UPSTREAM_FIELDS}
    defaults.update({k: v for k, v in overrides.items() if k not in UPSTREAM_FIELDS})
    defaults["upstream"] = UpstreamConfig(**upstream)  # type: ignore[arg-type]
    node = EdgeNode(NodeConfig(**defaults))  # type: ignore[arg-type]
    port = await node.start("127.0.0.1", 0)
    return node, f"http://127.0.0.1:{port}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


async def raw(url: str, data: bytes, read_timeout: float = 3.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(read_timeout):
            return await reader.read(-1)
    finally:
        writer.close()


# -- collapsing and read-while-writer ---------------------------------------------------


async def test_concurrent_requests_collapse_and_stream_before_the_segment_completes(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    feed = parent.feeds[SEG] = Feed()
    node, url = await start_node(parents=(parent.url,))
    try:
        n = 50
        responses = await _open_all(node, session, url + SEG, n, before_first_chunk=feed)
        assert parent.requests[SEG] == 1
        assert node.counters.misses == 1 and node.counters.collapsed == n - 1
        # every client has the first chunk while the segment is still in progress
        firsts = await asyncio.gather(*(r.content.readexactly(5) for r in responses))
        assert set(firsts) == {b"chunk"}
        assert not feed.done
        feed.push(b"-two")
        # a late joiner gets what is buffered at once, then the rest
        late = await session.get(url + SEG)
        assert late.headers["Transfer-Encoding"] == "chunked"
        assert await late.content.readexactly(9) == b"chunk-two"
        feed.push(b"-three", last=True)
        rests = await asyncio.gather(*(r.read() for r in responses))
        assert {b"chunk" + rest for rest in rests} == {feed.body}
        assert b"chunk-two" + await late.read() == feed.body
        assert all(r.headers["Access-Control-Allow-Origin"] == "*" for r in responses)
        # complete now: a hit, with a length, from the cache
        hit = await session.get(url + SEG)
        assert hit.headers["X-Cache"] == "HIT" and await hit.read() == feed.body
        assert hit.headers["Content-Length"] == str(len(feed.body))
        assert parent.requests[SEG] == 1
    finally:
        await node.close()


async def _open_all(
    node: EdgeNode, session: aiohttp.ClientSession, url: str, n: int, before_first_chunk: Feed
) -> list[aiohttp.ClientResponse]:
    """Issue n requests that the parent holds, then publish the first chunk; their heads."""
    seen = node.counters.requests
    tasks = [asyncio.create_task(session.get(url)) for _ in range(n)]
    # the node has no event per request; its counter is the truth of "all n have arrived"
    await _until(lambda: node.counters.requests - seen >= n)
    assert not any(t.done() for t in tasks)  # all held: no head before the first chunk
    before_first_chunk.push(b"chunk")
    return list(await asyncio.gather(*tasks))


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- cache policy over HTTP ------------------------------------------------------------------


async def test_ranges_head_and_absurd_ranges_on_a_cached_object(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    parent.static["/vod/t/init.mp4"] = (200, bytes(range(100)), IMMUTABLE)
    node, url = await start_node(parents=(parent.url,))
    try:
        assert await (await session.get(url + "/vod/t/init.mp4")).read() == bytes(range(100))
        r = await session.get(url + "/vod/t/init.mp4", headers={"Range": "bytes=10-19"})
        assert r.status == 206 and await r.read() == bytes(range(10, 20))
        assert r.headers["Content-Range"] == "bytes 10-19/100"
        r = await session.get(url + "/vod/t/init.mp4", headers={"Range": "bytes=500-"})
        assert r.status == 416
        r = await session.get(url + "/vod/t/init.mp4", headers={"Range": "bytes=0-1,3-4"})
        assert r.status == 200 and len(await r.read()) == 100
        r = await session.head(url + "/vod/t/init.mp4")
        assert r.status == 200 and r.headers["Content-Length"] == "100"
        assert parent.requests["/vod/t/init.mp4"] == 1
    finally:
        await node.close()


async def test_negative_caching_is_short_and_no_store_is_never_cached(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    parent.static["/live/c/private"] = (200, b"p", "no-store")
    node, url = await start_node(parents=(parent.url,), negative_ttl_max_s=0.3)
    try:
        for _ in range(3):
            assert (await session.get(url + "/live/c/e1/v1/99.m4s")).status == 404
            assert await (await session.get(url + "/live/c/private")).read() == b"p"
        assert parent.requests["/live/c/e1/v1/99.m4s"] == 1
        assert parent.requests["/live/c/private"] == 3
        await asyncio.sleep(0.35)  # a time-to-live is time: nothing to wait on but the clock
        assert (await session.get(url + "/live/c/e1/v1/99.m4s")).status == 404
        assert parent.requests["/live/c/e1/v1/99.m4s"] == 2
    finally:
        await node.close()


async def test_mpd_is_served_stale_while_a_slow_parent_revalidates(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    node, url = await start_node(parents=(parent.url,), mpd_stale_s=5.0)
    mpd = "/live/c/manifest.mpd"
    try:
        first = await (await session.get(url + mpd)).read()
        assert first == b"<MPD v='1'/>"
        storm = await asyncio.gather(*(session.get(url + mpd) for _ in range(20)))
        assert {r.headers["X-Cache"] for r in storm} == {"HIT"}
        parent.mpd_gate = asyncio.Event()  # the parent is now slow
        await asyncio.sleep(1.05)  # let the manifest's max-age=1 run out
        stale = await asyncio.gather(*(session.get(url + mpd) for _ in range(20)))
        assert {r.headers["X-Cache"] for r in stale} == {"STALE"}
        assert {await r.read() for r in stale} == {first}
        await _until(lambda: parent.requests[mpd] >= 2)
        assert parent.requests[mpd] == 2  # one revalidation for the whole storm, still waiting
        parent.mpd_gate.set()
        await _until(lambda: node.inflight == {})
        fresh = await session.get(url + mpd)
        assert fresh.headers["X-Cache"] == "HIT" and await fresh.read() == b"<MPD v='2'/>"
    finally:
        await node.close()


# -- parents: rendezvous and failover ---------------------------------------------------


async def test_parent_dying_mid_stream_does_not_cut_the_viewer_off(
    session: aiohttp.ClientSession,
) -> None:
    a, b = Parent(), Parent()
    await a.start()
    await b.start()
    first, second = (a, b) if rendezvous.order([a.url, b.url], SEG)[0] == a.url else (b, a)
    first.die_after = 2
    feeds = [Feed(), Feed()]
    a.feeds[SEG], b.feeds[SEG] = feeds
    node, url = await start_node(parents=(a.url, b.url))
    try:
        for feed in feeds:
            feed.push(b"aaaa")
            feed.push(b"bbbb")
        resp = await session.get(url + SEG)
        assert await resp.content.readexactly(8) == b"aaaabbbb"
        await _until(lambda: second.requests[SEG] == 1)
        for feed in feeds:
            feed.push(b"cccc", last=True)
        assert b"aaaabbbb" + await resp.read() == b"aaaabbbbcccc"
        assert first.requests[SEG] == 1 and second.requests[SEG] == 1
        assert second.ranges[-1] == "bytes=8-"
        assert node.upstream.stats.failovers == 1 and node.upstream.stats.resumed == 1
    finally:
        await node.close()
        await a.stop()
        await b.stop()


async def test_unreachable_parent_falls_over_to_the_next(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    dead = Parent()
    await dead.start()
    dead_url = dead.url
    await dead.stop()  # nothing listens there any more
    parent.static["/vod/t/a.m4s"] = (200, b"A", IMMUTABLE)
    node, url = await start_node(parents=(dead_url,), fallbacks=(parent.url,))
    try:
        assert await (await session.get(url + "/vod/t/a.m4s")).read() == b"A"
        # every parent gone: a clean 502, not a hang
        await parent.stop()
        r = await session.get(url + "/vod/t/b.m4s")
        assert r.status == 502
    finally:
        await node.close()


# a hold of one second, each tier a quarter second inside the one before: a node asked by a
# viewer waits 1.5 s for a held segment's head, any other request 0.3 s
HOLD = {"head_timeout_s": 0.3, "hold_s": 1.0, "hold_margin_s": 0.25}
HELD_TOO_LONG = (503, b"segment not produced in time\n", "max-age=0, no-store")


async def test_a_held_segment_waits_out_the_parents_hold_without_failing_over(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    """The parent holds the next segment longer than a plain head timeout, within its hold:
    one upstream fetch, no fallback."""
    fallback = Parent()
    await fallback.start()
    feed = parent.feeds[SEG] = Feed()
    fallback.feeds[SEG] = Feed()
    node, url = await start_node(parents=(parent.url,), fallbacks=(fallback.url,), **HOLD)
    try:
        pending = asyncio.create_task(session.get(url + SEG))
        await _until(lambda: parent.requests[SEG] == 1)
        await asyncio.sleep(0.6)  # the hold itself: longer than head_timeout_s, within hold_s
        assert not pending.done()
        feed.push(b"first", last=True)
        resp = await pending
        assert resp.status == 200 and await resp.read() == b"first"
        assert fallback.requests[SEG] == 0
        stats = node.upstream.stats
        assert (stats.fetches, stats.failovers, stats.errors) == (1, 0, 0)
    finally:
        await node.close()
        await fallback.stop()


async def test_a_hold_that_ran_out_is_passed_on_not_failed_over_through_the_tiers(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    """The origin's "not produced in time" reaches the viewer through shield and edge as a
    marked 503; neither node asks another parent.  A real 5xx still fails over."""
    fallback = Parent()
    await fallback.start()
    parent.static[SEG] = HELD_TOO_LONG
    parent.marks[SEG] = {HOLD_HEADER: HOLD_EXPIRED}  # as the origin marks it
    broken = "/live/c/e1/v1/8.m4s"
    parent.static[broken] = (503, b"manifest state unavailable\n", "max-age=0, no-store")
    fallback.static[broken] = (200, b"eight", IMMUTABLE)
    shield, shield_url = await start_node(parents=(parent.url,), **HOLD)
    edge, url = await start_node(parents=(shield_url,), fallbacks=(fallback.url,), **HOLD)
    try:
        resp = await session.get(url + SEG)
        assert resp.status == 503 and resp.headers["Livemesh-Hold"] == "expired"
        assert "no-store" in resp.headers["Cache-Control"]
        assert (parent.requests[SEG], fallback.requests[SEG]) == (1, 0)
        assert shield.upstream.stats.holds_expired == edge.upstream.stats.holds_expired == 1
        assert shield.upstream.stats.failovers == edge.upstream.stats.failovers == 0
        assert not edge.inflight and SEG not in edge.store  # asked again next time
        # the shield waited a margin less than the edge told it, the edge a viewer's wait
        assert parent.holds == ["1.250"]
        # a parent failing for real: the shield's 502 sends the edge to its fallback
        assert await (await session.get(url + broken)).read() == b"eight"
        assert edge.upstream.stats.failovers == 1
    finally:
        await edge.close()
        await shield.close()
        await fallback.stop()


async def test_an_origin_without_its_state_store_is_a_503_with_retry_after_through_the_tiers(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    """The origin answers 503 with ``Retry-After`` while Redis is down: shield and edge each
    fail over (every parent says the same) and tell the viewer so, not 502, so a player
    retries; a parent that is simply gone is still a 502."""
    fallback = Parent()
    await fallback.start()
    unavailable = (503, b"manifest state unavailable\n", "max-age=0, no-store")
    for origin in (parent, fallback):
        origin.static[SEG] = unavailable
        origin.marks[SEG] = {"Retry-After": "2"}
    shield, shield_url = await start_node(parents=(parent.url,), **HOLD)
    edge, url = await start_node(parents=(shield_url,), fallbacks=(fallback.url,), **HOLD)
    try:
        resp = await session.get(url + SEG)
        assert resp.status == 503, await resp.text()
        assert resp.headers["Retry-After"] == "2"
        assert "no-store" in resp.headers["Cache-Control"]
        assert (parent.requests[SEG], fallback.requests[SEG]) == (1, 1)
        assert edge.upstream.stats.failovers == 1
        await fallback.stop()  # the last parent gone: not a word about coming back
        resp = await session.get(url + SEG)
        assert resp.status == 502 and "Retry-After" not in resp.headers
    finally:
        await edge.close()
        await shield.close()
        await fallback.stop()


# -- tokens ------------------------------------------------------------------------------


async def test_a_refusal_is_the_shared_short_error_answer(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    """The node's own error answers have the origin's shape: a reason line, never cached."""
    node, url = await start_node(parents=(parent.url,), tokens_required=True)
    try:
        r = await session.get(url + "/live/c/e1/v1/init.mp4")
        assert r.status == 403 and re.fullmatch(r"token: [a-z-]+\n", await r.text())
        assert r.headers["Cache-Control"] == ERROR_CACHE_CONTROL
        assert r.headers["Content-Type"] == "text/plain"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        r = await session.get(url + "/nowhere")
        assert r.status == 404 and await r.text() == "not found\n"
        assert r.headers["Cache-Control"] == ERROR_CACHE_CONTROL
    finally:
        await node.close()


async def test_tokens_are_checked_before_the_cache_and_stripped_from_the_key(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    parent.static["/live/c/e1/v1/init.mp4"] = (200, b"INIT", IMMUTABLE)
    node, url = await start_node(parents=(parent.url,), tokens_required=True)
    signer = TokenSigner.from_spec(KEYS)
    path = "/live/c/e1/v1/init.mp4"
    try:
        good = signer.sign("/live/c/", "viewer-1", ttl_s=60)
        other = signer.sign("/live/c/", "viewer-2", ttl_s=60)
        assert await (await session.get(url + tokenized(good, path))).read() == b"INIT"
        r = await session.get(url + tokenized(other, path))
        assert r.headers["X-Cache"] == "HIT"  # one cache entry whatever the token
        expired = signer.sign("/live/c/", "v", ttl_s=1, now_s=1000.0)
        tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
        elsewhere = signer.sign("/live/other/", "v", ttl_s=60)
        foreign = TokenSigner.from_spec("t1:" + "cd" * 32).sign("/live/c/", "v", ttl_s=60)
        for bad in (expired, tampered, elsewhere, foreign, "garbage"):
            assert (await session.get(url + tokenized(bad, path))).status == 403
        assert (await session.get(url + path)).status == 403  # no token at all
        assert parent.requests[path] == 1
        assert node.counters.token_rejections == 6
    finally:
        await node.close()


async def test_a_node_without_keys_serves_without_tokens_and_refuses_any_given(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    """No default key: a node that requires tokens needs keys; one that does not (a shield)
    runs without, and a token it is given is of no key it knows."""
    with pytest.raises(ValueError, match="no token keys"):
        EdgeNode(NodeConfig(tokens_required=True, token_keys=None))
    path = "/live/c/e1/v1/init.mp4"
    parent.static[path] = (200, b"INIT", IMMUTABLE)
    node, url = await start_node(parents=(parent.url,), token_keys=None)
    try:
        assert await (await session.get(url + path)).read() == b"INIT"
        token = TokenSigner.from_spec(KEYS).sign("/live/c/", "viewer-1", ttl_s=60)
        r = await session.get(url + tokenized(token, path))
        assert r.status == 403 and "unknown-key" in await r.text()
    finally:
        await node.close()


async def test_preposition_is_off_without_an_admin_key(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    path = "/vod/film/v1/0.m4s"
    parent.static[path] = (200, b"0", IMMUTABLE)
    node, url = await start_node(parents=(parent.url,))
    try:
        body = json.dumps({"paths": [path]})
        for given in ("", "Bearer ", "Bearer None"):
            headers = {"Authorization": given} if given else {}
            r = await session.post(url + "/admin/preposition", data=body, headers=headers)
            assert r.status == 403
        assert parent.requests[path] == 0
    finally:
        await node.close()


async def test_a_remembered_target_is_refused_once_its_token_expires(
    parent: Parent, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hits skip the token's HMAC for a target seen before, never its expiry or its checks."""
    now = [1_000_000.0]
    monkeypatch.setattr(clock, "now_s", lambda: now[0])
    monkeypatch.setattr(access, "ROUTE_CACHE_ENTRIES", 3)
    path = "/live/c/e1/v1/init.mp4"
    parent.static[path] = (200, b"INIT", IMMUTABLE)
    node, url = await start_node(parents=(parent.url,), tokens_required=True)
    signer = TokenSigner.from_spec(KEYS)
    try:
        token = signer.sign("/live/c/", "viewer-1", ttl_s=10, now_s=now[0])
        target = url + tokenized(token, path)
        for _ in range(3):
            assert await (await session.get(target)).read() == b"INIT"
        assert len(node.access.routes) == 1
        # the same path under another (tampered) token is a new target: verified in full
        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert (await session.get(url + tokenized(tampered, path))).status == 403
        now[0] += 9.5
        assert (await session.get(target)).status == 200
        now[0] += 0.5  # the token's expiry instant
        r = await session.get(target)
        assert r.status == 403 and await r.read() == b"token: expired\n"
        assert (await session.get(target)).status == 403
        # the table is bounded: the oldest verdict goes first
        for n in range(5):
            fresh = signer.sign("/live/c/", f"v{n}", ttl_s=10, now_s=now[0])
            assert (await session.get(url + tokenized(fresh, path))).status == 200
        assert len(node.access.routes) == 3
        assert node.counters.token_rejections == 3
        assert parent.requests[path] == 1
    finally:
        await node.close()


# -- local endpoints -----------------------------------------------------------------------


async def test_time_metrics_health_and_cors_preflight(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    node, url = await start_node(parents=(parent.url,), name="e1")
    try:
        r = await session.get(url + "/time")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", await r.text())
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        r = await session.options(
            url + SEG, headers={"Origin": "http://player", "Access-Control-Request-Method": "GET"}
        )
        assert r.status == 204 and "GET" in r.headers["Access-Control-Allow-Methods"]
        assert (await session.get(url + "/healthz")).status == 200
        metrics = await (await session.get(url + "/metrics")).text()
        assert 'livemesh_edge_requests_total{node="e1"} 4' in metrics
        assert "livemesh_edge_cache_bytes" in metrics
    finally:
        await node.close()


async def test_preposition_needs_the_admin_key_then_fills_the_cache(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    paths = [f"/vod/film/v1/{n}.m4s" for n in range(5)]
    for n, path in enumerate(paths):
        parent.static[path] = (200, b"%d" % n, IMMUTABLE)
    node, url = await start_node(parents=(parent.url,), admin_key="s3cret")
    try:
        body = json.dumps({"paths": paths})
        r = await session.post(url + "/admin/preposition", data=body)
        assert r.status == 403
        r = await session.post(
            url + "/admin/preposition", data=body, headers={"Authorization": "Bearer wrong"}
        )
        assert r.status == 403
        r = await session.post(
            url + "/admin/preposition", data="{", headers={"Authorization": "Bearer s3cret"}
        )
        assert r.status == 400
        r = await session.post(
            url + "/admin/preposition", data=body, headers={"Authorization": "Bearer s3cret"}
        )
        assert r.status == 200
        assert (await r.json())["results"] == {p: 200 for p in paths}
        for path in paths:
            hit = await session.get(url + path)
            assert hit.headers["X-Cache"] == "HIT"
        assert all(parent.requests[p] == 1 for p in paths)
    finally:
        await node.close()


# -- bad input ------------------------------------------------------------------------------


async def test_bad_input_gets_a_clean_4xx_or_a_closed_connection(parent: Parent) -> None:
    limits = Limits(head_timeout_s=0.4, idle_timeout_s=0.4)
    node, url = await start_node(parents=(parent.url,), limits=limits, allowed_hosts=("edge",))
    try:
        huge = b"GET /live/x HTTP/1.1\r\nHost: edge\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await raw(url, huge)).startswith(b"HTTP/1.1 431 ")
        endless = b"GET /live/x HTTP/1.1\r\nHost: edge\r\nX-Junk: " + b"a" * 20000  # never ends
        assert (await raw(url, endless)).startswith(b"HTTP/1.1 431 ")
        for target in (b"/live/../etc/passwd", b"/live/c/%2e%2e/x", b"/live//c", b"/live/c/./x"):
            reply = await raw(url, b"GET " + target + b" HTTP/1.1\r\nHost: edge\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400 "), target
        reply = await raw(url, b"GET /live/c/x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 421 ")
        assert (await raw(url, b"\x16\x03\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await raw(url, b"GET /x HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        long_target = b"GET /live/" + b"a" * 10000 + b" HTTP/1.1\r\nHost: edge\r\n\r\n"
        assert (await raw(url, long_target)).startswith(b"HTTP/1.1 414 ")
        # slowloris: a head that never completes is cut off within the head timeout
        started = asyncio.get_running_loop().time()
        reply = await raw(url, b"GET /live/c/x HTTP/1.1\r\nHost: ed", read_timeout=3.0)
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert asyncio.get_running_loop().time() - started < 2.0
        # an idle keep-alive connection is closed, not kept forever
        reply = await raw(url, b"GET /time HTTP/1.1\r\nHost: edge\r\n\r\n", read_timeout=3.0)
        assert reply.startswith(b"HTTP/1.1 200 ")
        # other viewers were never affected
        assert (await raw(url, b"GET /healthz HTTP/1.0\r\nHost: edge\r\n\r\n")).startswith(
            b"HTTP/1.1 200 "
        )
    finally:
        await node.close()


async def test_memory_stays_bounded_under_a_flood_of_distinct_urls(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    for n in range(300):
        parent.static[f"/vod/flood/{n}"] = (200, b"z" * 1000, IMMUTABLE)
    node, url = await start_node(parents=(parent.url,), cache_bytes=50_000)
    try:
        for n in range(300):
            await (await session.get(url + f"/vod/flood/{n}")).read()
            assert node.store.bytes <= 50_000
        assert node.store.evictions >= 250
    finally:
        await node.close()


async def test_drain_finishes_streaming_viewers_and_refuses_new_ones(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    feed = parent.feeds[SEG] = Feed()
    node, url = await start_node(parents=(parent.url,))
    try:
        feed.push(b"first")
        resp = await session.get(url + SEG)
        assert await resp.content.readexactly(5) == b"first"
        drain = asyncio.create_task(node.drain())
        await _until(lambda: node.server.draining)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(url + "/healthz")
        assert not drain.done()
        feed.push(b"-last", last=True)
        assert await resp.read() == b"-last"
        await asyncio.wait_for(drain, 5)
    finally:
        await node.close()
