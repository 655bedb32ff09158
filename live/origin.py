"""The origin: LL-DASH over HTTP/1.1 from the manifest state in Redis (DESIGN.md §5).

Requests are dispatched on the path suffix: ``manifest.mpd`` is rendered from the
channel's config and current epoch; ``init.mp4`` and ``{n}.m4s`` are read from the
epoch's live window.  A segment is answered by where it stands against the live
edge (:func:`segment_state`): whole, being produced (streamed chunk by chunk with
chunked transfer), next (held open until its first chunk exists, then streamed),
or out of reach (typed errors, see :mod:`live.http_errors`).

New chunks are learnt of through :class:`live.fanout.ChunkFanout` (one event-log
reader per channel, not one per request).  Nothing here waits without a bound:
a stalled encoder ends a held request with 503 and cuts a streaming one after
two segment durations without a chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import logging
import os
import re
import signal

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from live.fanout import ChunkFanout, SegmentWatch
from live.http_errors import (
    BadRequest,
    Gone,
    HoldExpired,
    NotFound,
    TooEarly,
    error_middleware,
)
from live.ladder import NAME_PATTERN, ChannelConfig
from live.mpd import iso_utc, render_mpd
from live.state import ChannelStore, Epoch, Position, Representation
from live.timing import live_edge_segment
from livemesh import clock
from livemesh.heap import settle_heap
from livemesh.redis_server import shared_client

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
MANIFEST_CACHE = "public, max-age=1"  # ≤ 1 s: a player sees a new epoch within a second
NO_STORE = "no-store"
MPD_CONTENT_TYPE = "application/dash+xml"
# What dash.js reads from responses across origins (clock sync, throughput estimates).
EXPOSED_HEADERS = "Date, Content-Length, Content-Type, Cache-Control, Age"
EPOCH_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEGMENT_NAME = re.compile(r"^(\d{1,10})\.m4s$")
INIT_NAME = "init.mp4"
# A URL or header line longer than this is not one of ours: refused by the parser with 400.
HTTP_LIMITS = {"max_line_size": 4096, "max_field_size": 4096, "max_headers": 64}
# How many segment durations a request waits for the encoder before giving up.
STALL_SEGMENTS = 2


class OriginMetrics:
    """Counters of one app, in their own registry so several apps can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.responses = Counter(
            "livemesh_origin_responses",
            "HTTP responses by status",
            ["status"],
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "livemesh_origin_media_bytes", "media and manifest bytes sent", registry=self.registry
        )
        self.held = Gauge(
            "livemesh_origin_held_requests",
            "requests waiting for a segment's first chunk",
            registry=self.registry,
        )
        self.streaming = Gauge(
            "livemesh_origin_streaming_responses",
            "segments being streamed as produced",
            registry=self.registry,
        )


class Origin:
    """What the handlers share: Redis, the chunk fan-out, the metrics, the UTCTiming URLs."""

    def __init__(self, redis: aioredis.Redis, time_urls: list[str]) -> None:
        self.redis = redis
        self.time_urls = time_urls
        self.fanout = ChunkFanout(redis)
        self.metrics = OriginMetrics()

    def store(self, channel: str) -> ChannelStore:
        return ChannelStore(self.redis, channel)


ORIGIN = web.AppKey("origin", Origin)


class SegmentState(enum.Enum):
    COMPLETE = "complete"
    LIVE = "live"  # being produced: some chunks exist
    NEXT = "next"  # the one after the live edge: none exist yet


def segment_state(
    number: int, position: Position | None, config: ChannelConfig, due: int = -1
) -> SegmentState:
    """Where segment ``number`` stands against a rendition's live edge ``position``.

    ``due`` is the segment the wall clock says is being produced (the MPD's view, and
    so the player's): a segment up to one past it is held even when the encoder runs
    late, so a player that follows the MPD's timing is never told 404 for it.
    Raises :class:`TooEarly` beyond the next segment and :class:`Gone` behind the window.
    """
    produced = position.segment if position is not None else -1
    if position is not None:
        window_segments = config.window_s * 1000 // config.segment_ms
        if number < position.segment - window_segments:
            raise Gone("segment has left the live window")
        if position.has_complete(number):
            return SegmentState.COMPLETE
        if number == position.segment:
            return SegmentState.LIVE
    if produced < number <= max(produced, due) + 1:
        return SegmentState.NEXT
    raise TooEarly("segment not produced yet")


def _media_headers(rep: Representation) -> dict[str, str]:
    return {"Content-Type": f"{rep.kind}/mp4", "Cache-Control": IMMUTABLE}


def _channel_name(request: web.Request) -> str:
    channel = request.match_info["channel"]
    if not NAME_PATTERN.match(channel):
        raise BadRequest("invalid channel name")
    return channel


async def _epoch_and_rep(store: ChannelStore, request: web.Request) -> tuple[Epoch, Representation]:
    """The epoch and rendition a media URL names; 400 on malformed names, 404 on unknown."""
    epoch_id, rep_id = request.match_info["epoch"], request.match_info["rep"]
    if not EPOCH_PATTERN.match(epoch_id):
        raise BadRequest("invalid epoch id")
    if not NAME_PATTERN.match(rep_id):
        raise BadRequest("invalid rendition name")
    epoch = await store.find_epoch(epoch_id)
    if epoch is None:
        raise NotFound("unknown or expired epoch")
    rep = epoch.representation(rep_id)
    if rep is None:
        raise NotFound("unknown rendition")
    return epoch, rep


async def handle_manifest(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    store = origin.store(_channel_name(request))
    config = await store.get_config()
    if config is None:
        raise NotFound("unknown channel")
    epoch = await store.current_epoch()
    if epoch is None:
        raise NotFound("channel is off air")
    time_urls = origin.time_urls or [f"http://{request.host}/time"]
    return web.Response(
        text=render_mpd(config, epoch, clock.now_ms(), time_urls),
        content_type=MPD_CONTENT_TYPE,
        headers={"Cache-Control": MANIFEST_CACHE},
    )


async def handle_media(request: web.Request) -> web.StreamResponse:
    """``init.mp4`` or ``{n}.m4s`` of an epoch's rendition, dispatched on the name."""
    origin = request.app[ORIGIN]
    store = origin.store(_channel_name(request))
    name = request.match_info["name"]
    segment = SEGMENT_NAME.match(name)
    if name != INIT_NAME and segment is None:
        if name.endswith(".m4s"):
            raise BadRequest("segment number must be a non-negative integer")
        raise NotFound("no such object")
    epoch, rep = await _epoch_and_rep(store, request)
    if segment is None:
        data = await store.init_segment(epoch.id, rep.id)
        if data is None:
            raise Gone("init segment has expired")
        return web.Response(body=data, headers=_media_headers(rep))
    return await _serve_segment(request, store, epoch, rep, int(segment.group(1)))


async def _serve_segment(
    request: web.Request, store: ChannelStore, epoch: Epoch, rep: Representation, number: int
) -> web.StreamResponse:
    config = await store.get_config()
    if config is None:
        raise NotFound("unknown channel")
    chunks, position = await store.chunks(epoch.id, rep.id, number)
    due = live_edge_segment(clock.now_ms(), epoch.start_ms, config.timeline)
    state = segment_state(number, position, config, due)
    if state is SegmentState.COMPLETE:
        if not chunks:
            raise Gone("segment has expired")
        return web.Response(body=b"".join(chunks), headers=_media_headers(rep))
    if state is SegmentState.NEXT:
        current = await store.current_epoch()
        if current is None or current.id != epoch.id:
            raise NotFound("epoch has ended")
    if request.method == "HEAD":  # never held: the live segment exists, the next not yet
        if state is SegmentState.NEXT:
            raise TooEarly("segment not produced yet")
        return web.Response(headers=_media_headers(rep))
    segment = LiveSegment(request, store, epoch.id, rep, number, config)
    return await segment.serve()


class LiveSegment:
    """One request for a segment still being produced: hold, then relay chunk by chunk."""

    def __init__(
        self,
        request: web.Request,
        store: ChannelStore,
        epoch_id: str,
        rep: Representation,
        number: int,
        config: ChannelConfig,
    ) -> None:
        self.request = request
        self.store = store
        self.epoch_id = epoch_id
        self.rep = rep
        self.number = number
        self.stall_s = STALL_SEGMENTS * config.segment_ms / 1000
        self.origin = request.app[ORIGIN]

    async def serve(self) -> web.StreamResponse:
        metrics = self.origin.metrics
        fanout = self.origin.fanout
        async with fanout.watch(self.store.channel, self.epoch_id, self.rep.id, self.number) as w:
            with metrics.held.track_inprogress():
                chunks, complete = await self._next_chunks(w, 0)
            if not chunks and not complete:
                raise HoldExpired("segment not produced in time")
            if complete:  # it finished before we started: chunks 0.. are all of it
                return web.Response(body=b"".join(chunks), headers=_media_headers(self.rep))
            with metrics.streaming.track_inprogress():
                return await self._relay(w, chunks)

    async def _next_chunks(self, watch: SegmentWatch, first: int) -> tuple[list[bytes], bool]:
        """Chunks ``first..`` once some exist or the segment is complete; ``[]`` on a stall."""
        while True:
            chunks, position = await self.store.chunks(
                self.epoch_id, self.rep.id, self.number, first
            )
            complete = position is not None and position.has_complete(self.number)
            if chunks or complete:
                return chunks, complete
            if not await watch.next(self.stall_s):
                return [], False

    async def _relay(self, watch: SegmentWatch, chunks: list[bytes]) -> web.StreamResponse:
        """Write each chunk as soon as it exists; HTTP/1.1 frames them with chunked transfer."""
        response = web.StreamResponse(headers=_media_headers(self.rep))
        await response.prepare(self.request)
        sent, complete = 0, False
        try:
            while True:
                for chunk in chunks:
                    await response.write(chunk)
                    self.origin.metrics.bytes_out.inc(len(chunk))
                sent += len(chunks)
                if complete:
                    break
                chunks, complete = await self._next_chunks(watch, sent)
                if not chunks and not complete:
                    log.warning("segment %s/%s/%d stalled", self.epoch_id, self.rep.id, self.number)
                    self._cut()
                    return response
            await response.write_eof()
        except ConnectionError:
            log.debug("client left during segment %d", self.number)
        except RedisError:
            log.exception("manifest state lost during segment %d", self.number)
            self._cut()
        return response

    def _cut(self) -> None:
        """End a broken stream by closing the connection, not the chunked body.

        A clean end of the body would pass a truncated segment off as a whole one,
        and caches keep segments for a year.
        """
        if self.request.transport is not None:
            self.request.transport.abort()


async def handle_time(request: web.Request) -> web.Response:
    """The UTCTiming source (``urn:mpeg:dash:utc:http-iso:2014``): now, to the millisecond."""
    return web.Response(
        text=iso_utc(clock.now_ms()), content_type="text/plain", headers={"Cache-Control": NO_STORE}
    )


async def handle_metrics(request: web.Request) -> web.Response:
    registry = request.app[ORIGIN].metrics.registry
    response = web.Response(body=generate_latest(registry), headers={"Cache-Control": NO_STORE})
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS preflight on any path: any origin may GET and HEAD everything here.

    A middleware, not a catch-all route, so unknown paths stay 404 rather than 405.
    """
    if request.method != "OPTIONS":
        return await handler(request)
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": "*",
            "Access-Control-Max-Age": "86400",
        },
    )


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer carries (errors too: a player must read why), and metrics."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    metrics = request.app[ORIGIN].metrics
    metrics.responses.labels(status=str(response.status)).inc()
    if isinstance(response, web.Response) and request.method != "HEAD":
        metrics.bytes_out.inc(response.content_length or 0)


async def _on_cleanup(app: web.Application) -> None:
    await app[ORIGIN].fanout.close()


def build_app(redis: aioredis.Redis, *, time_urls: list[str] | None = None) -> web.Application:
    """The origin application; ``time_urls`` are the UTCTiming sources (default: this host)."""
    app = web.Application(
        middlewares=[error_middleware, preflight_middleware],
        # A viewer that leaves cancels its handler, so no held or streaming task outlives it.
        handler_args={"handler_cancellation": True, **HTTP_LIMITS},
    )
    app[ORIGIN] = Origin(redis, time_urls or [])
    app.router.add_get("/time", handle_time)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/live/{channel}/manifest.mpd", handle_manifest)
    app.router.add_get("/live/{channel}/{epoch}/{rep}/{name}", handle_media)
    app.on_response_prepare.append(_on_prepare)
    app.on_cleanup.append(_on_cleanup)
    return app


async def serve(
    host: str, port: int, redis_url: str, time_urls: list[str] | None = None
) -> None:
    """Run the origin until SIGINT or SIGTERM, then close listeners and Redis cleanly."""
    redis = shared_client(redis_url)
    runner = web.AppRunner(build_app(redis, time_urls=time_urls))
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        settle_heap()
        log.info("origin listening on http://%s:%d", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh origin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--time-url",
        action="append",
        dest="time_urls",
        help="a UTCTiming URL players sync with (every edge answers /time); repeat it for "
        "more sources, tried in order; default: /time on the Host of the request",
    )
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("no Redis: give --redis-url or set REDIS_URL")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.host, args.port, args.redis_url, args.time_urls))
    return 0
