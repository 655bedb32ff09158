"""The origin: LL-DASH and LL-HLS over HTTP/1.1 from the manifest state in Redis (§5).

This module is the app: the route table, the headers and metrics every answer carries,
CORS preflight, ``/time`` and ``/metrics``, and the process (``livemesh origin``).
Requests are dispatched on the path: ``manifest.mpd`` and the ``.m3u8`` playlists to
:mod:`live.origin_manifests`; ``init.mp4`` and ``{n}.m4s`` to :mod:`live.origin_segments`
(a segment still being produced: :mod:`live.origin_live_segment`); what the handlers
share (Redis, the chunk fan-out, the metrics) is :class:`live.origin_context.Origin`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kernel import clock
from kernel.config import ConfigError, OriginSettings, parse
from kernel.heap import settle_heap
from kernel.http.cors import MEDIA
from kernel.http.time import TIME_CACHE_CONTROL, TIME_PATH, http_iso
from kernel.loop import run
from kernel.objectstore import ObjectStore, open_store
from kernel.redis_server import shared_client
from live import vod_origin
from live.http_errors import error_middleware
from live.origin_context import ORIGIN, Origin
from live.origin_manifests import handle_manifest, handle_playlist
from live.origin_segments import SegmentState, handle_media, segment_state

__all__ = ["ORIGIN", "Origin", "SegmentState", "build_app", "main", "segment_state"]

log = logging.getLogger(__name__)

NO_STORE = "no-store"
CORS_HEADERS = MEDIA.response_headers()
PREFLIGHT_HEADERS = MEDIA.preflight_headers()
# A URL or header line longer than this is not one of ours: refused by the parser with 400.
HTTP_LIMITS = {"max_line_size": 4096, "max_field_size": 4096, "max_headers": 64}


async def handle_time(request: web.Request) -> web.Response:
    """The UTCTiming source (``urn:mpeg:dash:utc:http-iso:2014``): now, to the millisecond."""
    return web.Response(
        text=http_iso(clock.now_ms()),
        content_type="text/plain",
        headers={"Cache-Control": TIME_CACHE_CONTROL},
    )


async def handle_metrics(request: web.Request) -> web.Response:
    registry = request.app[ORIGIN].metrics.registry
    response = web.Response(body=generate_latest(registry), headers={"Cache-Control": NO_STORE})
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS preflight on any path (:data:`kernel.http.cors.MEDIA`).

    A middleware, not a catch-all route, so unknown paths stay 404 rather than 405.
    """
    if request.method != "OPTIONS":
        return await handler(request)
    return web.Response(status=204, headers=PREFLIGHT_HEADERS)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer carries (errors too: a player must read why), and metrics."""
    response.headers.update(CORS_HEADERS)
    metrics = request.app[ORIGIN].metrics
    metrics.responses.labels(status=str(response.status)).inc()
    if isinstance(response, web.Response) and request.method != "HEAD":
        metrics.bytes_out.inc(response.content_length or 0)


async def _on_cleanup(app: web.Application) -> None:
    await app[ORIGIN].fanout.close()


def build_app(
    redis: aioredis.Redis,
    *,
    time_urls: list[str] | None = None,
    vod_store: ObjectStore | None = None,
    dvr_s: int = 0,
) -> web.Application:
    """The origin application; ``time_urls`` are the UTCTiming sources (default: this host).

    With ``vod_store``, it also serves the VOD titles in that store (:mod:`live.vod_origin`)
    and live segments older than the window from the archive in it, offering players
    ``dvr_s`` of time shift (:mod:`live.origin_archive`).
    """
    app = web.Application(
        middlewares=[error_middleware, preflight_middleware],
        # A viewer that leaves cancels its handler, so no held or streaming task outlives it.
        handler_args={"handler_cancellation": True, **HTTP_LIMITS},
    )
    app[ORIGIN] = Origin(redis, time_urls or [], vod_store, dvr_s)
    app.router.add_get(TIME_PATH, handle_time)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/live/{channel}/manifest.mpd", handle_manifest)
    app.router.add_get("/live/{channel}/{name}", handle_playlist)
    app.router.add_get("/live/{channel}/{epoch}/{rep}/{name}", handle_media)
    if vod_store is not None:
        vod_origin.mount(app, vod_store)
    app.on_response_prepare.append(_on_prepare)
    app.on_cleanup.append(_on_cleanup)
    return app


async def serve(
    host: str,
    port: int,
    redis_url: str,
    time_urls: list[str] | None = None,
    vod_store: str | None = None,
    dvr_s: int = 0,
) -> None:
    """Run the origin until SIGINT or SIGTERM, then close listeners and Redis cleanly."""
    redis = shared_client(redis_url)
    store = open_store(vod_store) if vod_store else None
    runner = web.AppRunner(build_app(redis, time_urls=time_urls, vod_store=store, dvr_s=dvr_s))
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
        if store is not None:
            await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh origin", description=__doc__.splitlines()[0])
    settings = parse(OriginSettings, argv, parser)[0].settings
    try:
        redis_url = settings.required_redis_url()
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    served = serve(
        settings.host,
        settings.port,
        redis_url,
        settings.time_urls,
        settings.vod_store,
        settings.dvr_s,
    )
    run(served, settings.uvloop)
    return 0
