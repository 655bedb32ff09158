"""``livemesh ingest``: channels fed by broadcasters over WHIP and RTMP.

One process serves a set of channels.  Each runs a :class:`LiveChannel` whose
source is an :class:`IngestSource`, on air from the start with the slate, so the
epoch and its segment numbering survive every broadcaster coming and going.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import redis.asyncio as aioredis
from aiohttp import web

from live.channel import LiveChannel
from live.ingest.admission import Admission
from live.ingest.ingest_source import IngestSource
from live.ingest.keys import RedisStreamKeys, StreamKeys
from live.ingest.rtmp import RtmpFront
from live.ingest.whip import WhipEndpoint
from live.ladder import ChannelConfig
from live.state import ChannelStore
from livemesh.redis_server import redis_client

log = logging.getLogger("livemesh.ingest")


class IngestServer:
    """The channels, the WHIP endpoint and the RTMP front of one ingest process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        configs: list[ChannelConfig],
        keys: StreamKeys,
        host: str = "127.0.0.1",
        http_port: int = 0,
        rtmp_port: int | None = 0,
        admission: Admission | None = None,
    ) -> None:
        self.redis = redis
        self.admission = admission if admission is not None else Admission()
        self.sources = {c.name: IngestSource(c) for c in configs}
        self.channels = {
            c.name: LiveChannel(c, ChannelStore(redis, c.name), self.sources[c.name])
            for c in configs
        }
        self.whip = WhipEndpoint(self.sources, keys, self.admission)
        self.rtmp = (
            RtmpFront(self.sources, keys, host, rtmp_port, self.admission)
            if rtmp_port is not None
            else None
        )
        self.host, self._http_port = host, http_port
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    @property
    def http_port(self) -> int:
        return self._http_port

    async def start(self) -> None:
        """Channels on air (slate), then the endpoints open."""
        for channel in self.channels.values():
            task = asyncio.create_task(channel.run())
            started = asyncio.create_task(channel.started.wait())
            done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
            self._tasks.append(task)
        app = web.Application()
        app.add_routes([*self.whip.routes(), web.get("/healthz", self._health)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._http_port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self._http_port = server.sockets[0].getsockname()[1]
        if self.rtmp is not None:
            await self.rtmp.start()
        log.info("ingest: WHIP on http://%s:%d/whip", self.host, self._http_port)

    async def _health(self, request: web.Request) -> web.Response:
        on_air = all(c.started.is_set() for c in self.channels.values())
        return web.Response(status=200 if on_air else 503, text="ok" if on_air else "starting")

    async def stop(self) -> None:
        if self.rtmp is not None:
            await self.rtmp.stop()
        await self.whip.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        for channel in self.channels.values():
            channel.stop()
        for task in self._tasks:
            await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livemesh ingest", description="take WHIP and RTMP broadcasters into live channels"
    )
    parser.add_argument("--channel", action="append", required=True, help="channel id (repeat)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"), required=not os.environ.get("REDIS_URL")
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=8090, help="WHIP endpoint port")
    parser.add_argument("--rtmp-port", type=int, default=1935)
    parser.add_argument(
        "--dev-key",
        action="append",
        default=[],
        metavar="CHANNEL=KEY",
        help="issue a stream key at start (local demo only; the channels service owns keys)",
    )
    parser.add_argument("--segment-ms", type=int, default=2000)
    parser.add_argument("--chunk-ms", type=int, default=200)
    parser.add_argument("--window-s", type=int, default=60)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configs = [
        ChannelConfig(
            name, segment_ms=args.segment_ms, chunk_ms=args.chunk_ms, window_s=args.window_s
        )
        for name in args.channel
    ]
    dev_keys = [tuple(pair.split("=", 1)) for pair in args.dev_key]
    asyncio.run(_run(args, configs, dict(dev_keys)))
    return 0


async def _run(
    args: argparse.Namespace, configs: list[ChannelConfig], dev_keys: dict[str, str]
) -> None:
    redis = redis_client(args.redis_url)
    keys = RedisStreamKeys(redis)
    for channel, key in dev_keys.items():
        await keys.issue(channel, key)
    server = IngestServer(redis, configs, keys, args.host, args.http_port, args.rtmp_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    try:
        await stopping.wait()
    finally:
        await server.stop()
        await redis.aclose()
