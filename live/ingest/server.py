"""``livemesh ingest``: channels fed by broadcasters over WHIP and RTMP.

One process serves a set of channels (:mod:`live.ingest.channels`: those named at
start, and with ``--any-channel`` any other created one, from its first broadcaster).
Each runs a :class:`LiveChannel` whose source is an :class:`IngestSource`, on air with
the slate between broadcasters, so the epoch and its segment numbering survive every
broadcaster coming and going.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import redis.asyncio as aioredis
from aiohttp import web

from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import wait_for_channel_config
from kernel.config import ConfigError, IngestSettings, parse
from kernel.loop import run
from kernel.redis_server import redis_client
from live.channel import add_config_timeout
from live.ingest.admission import Admission
from live.ingest.channels import IngestChannels
from live.ingest.ingest_source import IngestSource
from live.ingest.keys import RedisStreamKeys, StreamKeys
from live.ingest.rtmp import RtmpFront
from live.ingest.whip import WhipEndpoint

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
        any_channel: bool = False,
        not_channels: frozenset[str] = frozenset(),
    ) -> None:
        self.redis = redis
        self.admission = admission if admission is not None else Admission()
        self.channels = IngestChannels(redis, configs, any_channel, not_channels)
        self.whip = WhipEndpoint(self.channels, keys, self.admission)
        self.rtmp = (
            RtmpFront(self.channels, keys, host, rtmp_port, self.admission)
            if rtmp_port is not None
            else None
        )
        self.host, self._http_port = host, http_port
        self._runner: web.AppRunner | None = None

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def sources(self) -> dict[str, IngestSource]:
        """The sources of the channels on air here, by channel."""
        return self.channels.sources

    async def start(self) -> None:
        """The named channels on air (slate), then the endpoints open."""
        await self.channels.start()
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
        on_air = self.channels.on_air
        return web.Response(status=200 if on_air else 503, text="ok" if on_air else "starting")

    async def stop(self) -> None:
        if self.rtmp is not None:
            await self.rtmp.stop()
        await self.whip.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.channels.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livemesh ingest", description="take WHIP and RTMP broadcasters into live channels"
    )
    add_config_timeout(parser, "each channel")
    loaded, args = parse(IngestSettings, argv, parser)
    settings = loaded.settings
    if not settings.channel and not settings.any_channel:
        parser.error("the following arguments are required: --channel (or --any-channel)")
    try:
        redis_url = settings.required_redis_url()
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    pairs = [pair.partition("=") for pair in settings.dev_key]
    if not all(sep for _, sep, _ in pairs):
        parser.error("--dev-key takes CHANNEL=KEY")
    dev_keys = {channel: key for channel, _, key in pairs}
    run(_run(settings, redis_url, args.config_timeout_s, dev_keys), settings.uvloop)
    return 0


async def _run(
    settings: IngestSettings, redis_url: str, config_timeout_s: float, dev_keys: dict[str, str]
) -> None:
    redis = redis_client(redis_url)
    configs = [
        await wait_for_channel_config(redis, name, config_timeout_s) for name in settings.channel
    ]
    keys = RedisStreamKeys(redis)
    for channel, key in dev_keys.items():
        await keys.issue(channel, key)
    server = IngestServer(
        redis,
        configs,
        keys,
        settings.host,
        settings.http_port,
        settings.rtmp_port,
        any_channel=settings.any_channel,
        not_channels=frozenset(settings.not_channel),
    )
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
