"""Bad input: floods of session attempts, garbage media and stalled publishers.

One channel ("calm") has a live broadcaster throughout; the abuse is aimed at the
process (flood) or at another channel ("bad").  The calm channel must not notice:
it stays on air and its chunks keep coming at their pace.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from kernel import clock
from live.ingest.server import IngestServer
from live.state import ChannelStore
from tests.ingest_helpers import (
    ingest_server,
    is_broadcast,
    is_slate,
    next_segment_centre,
    p256_certificate,
    start_rtmp_publisher,
    start_whip_publisher,
    wait_threading_event,
)
from tests.test_ingest_whip import make_offer, publishing

CALM_KEY = "calm-secret-key"
BAD_KEY = "bad-secret-key"
MAX_CHUNK_GAP_MS = 3000  # chunks are 200 ms; a starved channel stops for 5 s or more
ATTEMPT_TIMEOUT_S = 30  # a refused attempt is answered at once; this only bounds a failure


@contextlib.asynccontextmanager
async def chunk_gaps(store: ChannelStore, rep: str = "v360") -> AsyncIterator[list[int]]:
    """The longest wait between two chunks of ``rep`` while the body runs (one item, ms)."""
    longest = [0]

    async def watch() -> None:
        last: int | None = None
        async for event in store.events():
            if event.rep == rep:
                now = clock.now_ms()
                if last is not None:
                    longest[0] = max(longest[0], now - last)
                last = now

    task = asyncio.create_task(watch())
    try:
        yield longest
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def whip_url(server: IngestServer, channel: str) -> str:
    return f"http://127.0.0.1:{server.http_port}/whip/{channel}"


async def test_a_flood_of_session_attempts_gets_429_and_503_and_the_live_channel_carries_on(
    redis: aioredis.Redis,
) -> None:
    async with (
        ingest_server(redis, "calm", CALM_KEY, rtmp=True, others={"bad": BAD_KEY}) as server,
        aiohttp.ClientSession() as http,
        publishing(http, whip_url(server, "calm"), CALM_KEY),
    ):
        calm = server.sources["calm"]
        assert await wait_threading_event(calm.on_air, 15)
        offer_pc = await make_offer()
        offer = offer_pc.localDescription.sdp
        await offer_pc.close()
        assert server.rtmp is not None
        statuses: collections.Counter[int] = collections.Counter()

        async def attempts(client_ip: str, count: int) -> None:
            connector = aiohttp.TCPConnector(local_addr=(client_ip, 0), force_close=True)
            limit = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
            async with aiohttp.ClientSession(connector=connector, timeout=limit) as flooder:

                async def attempt() -> None:
                    async with flooder.post(
                        whip_url(server, "bad"),
                        data=offer,
                        headers={"Content-Type": "application/sdp",
                                 "Authorization": "Bearer guessed-key"},
                    ) as response:  # fmt: skip
                        statuses[response.status] += 1
                        if response.status in (429, 503):
                            assert int(response.headers["Retry-After"]) >= 1

                # all at once: a client's burst is spent before its bucket refills
                await asyncio.gather(*(attempt() for _ in range(count)))

        async def rtmp_connection() -> bool:
            """A connection that never speaks: True if it was closed on us at once."""
            assert server.rtmp is not None
            connecting = asyncio.open_connection("127.0.0.1", server.rtmp.port)
            reader, writer = await asyncio.wait_for(connecting, ATTEMPT_TIMEOUT_S)
            try:
                return await asyncio.wait_for(reader.read(1), 3) == b""
            except (TimeoutError, ConnectionError):
                return False
            finally:
                writer.close()

        async with chunk_gaps(ChannelStore(redis, "calm")) as longest:
            flood = [attempts(f"127.0.0.{i}", 10) for i in range(2, 22)]
            closed = await asyncio.gather(*flood, *(rtmp_connection() for _ in range(30)))
            _, colour = await next_segment_centre(ChannelStore(redis, "calm"))
        assert statuses[429] > 0 and statuses[503] > 0, statuses
        assert set(statuses) <= {401, 429, 503}, statuses  # nobody got in with a guessed key
        assert sum(1 for c in closed[20:] if c) >= 20  # RTMP: refused connections closed at once
        assert calm.on_air.is_set() and is_broadcast(colour), colour
        assert longest[0] < MAX_CHUNK_GAP_MS, longest
        assert not server.sources["bad"].publishing


class GarbageProxy:
    """Relays an RTMP publisher, then replaces its bytes with random ones (after ``clean``)."""

    def __init__(self, upstream_port: int, clean: int) -> None:
        self.upstream_port, self.clean = upstream_port, clean
        self.garbage_sent = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> GarbageProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def back() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(back())
        passed = 0
        try:
            while data := await reader.read(65536):
                if passed >= self.clean:
                    data = os.urandom(len(data))
                    self.garbage_sent.set()
                passed += len(data)
                up_writer.write(data)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            task.cancel()
            up_writer.close()
            writer.close()


async def test_garbage_media_and_a_stalled_publisher_end_cleanly_and_alone(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    bad_store = ChannelStore(redis, "bad")
    async with (
        ingest_server(redis, "calm", CALM_KEY, rtmp=True, others={"bad": BAD_KEY}) as server,
        aiohttp.ClientSession() as http,
        publishing(http, whip_url(server, "calm"), CALM_KEY),
    ):
        calm, bad = server.sources["calm"], server.sources["bad"]
        assert server.rtmp is not None
        assert await wait_threading_event(calm.on_air, 15)
        async with chunk_gaps(ChannelStore(redis, "calm")) as longest:
            # RTMP: a valid publisher whose stream turns to random bytes after 400 kB
            async with GarbageProxy(server.rtmp.port, 400_000) as proxy:
                publisher = await start_rtmp_publisher(
                    f"rtmp://127.0.0.1:{proxy.port}/live/{BAD_KEY}"
                )
                try:
                    assert await wait_threading_event(bad.on_air, 15)
                    await asyncio.wait_for(proxy.garbage_sent.wait(), 30)
                    colours = [(await next_segment_centre(bad_store))[1] for _ in range(8)]
                    assert is_slate(colours[-1]), colours  # "back soon"
                    assert not bad.publishing  # the session was ended, not left hanging
                    assert not server.rtmp.publishers
                finally:
                    await publisher.stop()

            # WHIP: FFmpeg's whip muxer frozen mid-stream (SIGSTOP): no DELETE, no media
            cert = p256_certificate(tmp_path)
            publisher = await start_whip_publisher(whip_url(server, "bad"), BAD_KEY, cert)
            try:
                assert await wait_threading_event(bad.on_air, 20)
                publisher.signal(signal.SIGSTOP)
                colours = [(await next_segment_centre(bad_store))[1] for _ in range(8)]
                assert is_slate(colours[-1]), colours
                assert not bad.publishing
                assert [s.channel for s in server.whip.sessions.values()] == ["calm"]
            finally:
                publisher.signal(signal.SIGCONT)
                await publisher.stop(signal.SIGKILL)
        assert calm.on_air.is_set()
        assert longest[0] < MAX_CHUNK_GAP_MS, longest
