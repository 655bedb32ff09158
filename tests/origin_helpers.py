"""The origin's test channel and helpers, shared by the origin's LL-DASH and LL-HLS tests
(the fixtures ``channel``, ``server`` and ``http`` are in conftest.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from kernel import clock
from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import put_channel_config
from kernel.epoch import Epoch, Representation
from live.origin import ORIGIN, Origin, build_app
from live.state import ChannelStore

# D = 0.5 s, C = 0.1 s: a stalled encoder is given up on after 2·D = 1 s.
CONFIG = ChannelConfig("demo", segment_ms=500, chunk_ms=100, window_s=2)
CHUNKS = CONFIG.timeline.chunks_per_segment
STALL_S = 2 * CONFIG.segment_ms / 1000
VIDEO = Representation("v1", "video", "avc1.64001f", 1_000_000, 15360, 640, 360, 30)
AUDIO = Representation("a1", "audio", "mp4a.40.2", 128_000, 48000, sample_rate=48000, channels=2)
IMMUTABLE = "public, max-age=31536000, immutable"


def chunk_bytes(rep: str, segment: int, chunk: int) -> bytes:
    """Recognisable bytes per chunk, long enough to span several TCP reads."""
    return f"[{rep}/{segment}/{chunk}]".encode() * 500


def whole(rep: str, segment: int) -> bytes:
    return b"".join(chunk_bytes(rep, segment, k) for k in range(CHUNKS))


class Channel:
    """The writer side of one test channel: what the packager would publish."""

    def __init__(self, redis: aioredis.Redis, epoch_id: str = "e1") -> None:
        self.store = ChannelStore(redis, CONFIG.name)
        self.epoch = Epoch(epoch_id, clock.now_ms(), (VIDEO, AUDIO))

    async def start(self) -> None:
        await put_channel_config(self.store.redis, CONFIG)
        inits = {r.id: f"init-{r.id}".encode() for r in self.epoch.representations}
        await self.store.start_epoch(self.epoch, inits, CONFIG.window_s)

    async def chunk(self, segment: int, chunk: int, rep: str = "v1") -> None:
        last = chunk == CHUNKS - 1
        data = chunk_bytes(rep, segment, chunk)
        await self.store.publish_chunk(self.epoch, rep, segment, chunk, data, last, CONFIG.window_s)

    async def segment(self, segment: int, rep: str = "v1") -> None:
        for k in range(CHUNKS):
            await self.chunk(segment, k, rep)


def origin_of(server: TestServer) -> Origin:
    return server.app[ORIGIN]


def gauge(server: TestServer, name: str) -> float:
    value = origin_of(server).metrics.registry.get_sample_value(name)
    return value or 0.0


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for server-side state the test cannot be told of directly (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


class CountingOrigin:
    """The real origin app with request counters in front."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.requests: Counter[str] = Counter()  # by path
        self.targets: Counter[str] = Counter()  # by path and query
        self.arrived: dict[str, asyncio.Event] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    def arrival(self, path: str) -> asyncio.Event:
        return self.arrived.setdefault(path, asyncio.Event())

    async def start(self) -> None:
        app = build_app(self.redis)

        @web.middleware
        async def count(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            self.requests[request.path] += 1
            self.targets[request.path_qs] += 1
            self.arrival(request.path).set()
            return await handler(request)

        app.middlewares.insert(0, count)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
