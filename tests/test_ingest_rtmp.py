"""RTMP ingest: Debian's ffmpeg CLI publishes, the channel shows it; the key is enforced."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from kernel.keys import ChannelKeys
from live.ingest.server import IngestServer
from live.state import ChannelStore
from tests.ingest_helpers import (
    BROADCAST_RGB,
    ingest_server,
    is_broadcast,
    is_slate,
    next_segment_centre,
    wait_threading_event,
)

KEY = "rtmp-secret-key"


@contextlib.asynccontextmanager
async def ffmpeg_publisher(
    server: IngestServer, key: str, size: str = "320x180"
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ffmpeg -re`` sending a magenta picture (``size``, 30 fps) and a tone as FLV over
    RTMP, for the body; ``key`` is the stream name (``KEY?backup=1``: a backup feed)."""
    assert server.rtmp is not None
    colour = "0x{:02X}{:02X}{:02X}".format(*BROADCAST_RGB)
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", f"color=c={colour}:s={size}:r=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", f"rtmp://127.0.0.1:{server.rtmp.port}/live/{key}",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_ffmpeg_publishes_over_rtmp_and_the_slate_returns_after(
    redis: aioredis.Redis,
) -> None:
    store = ChannelStore(redis, "rtmp")
    async with ingest_server(redis, "rtmp", KEY, rtmp=True) as server:
        source = server.sources["rtmp"]
        epoch = await store.current_epoch()
        async with ffmpeg_publisher(server, KEY):
            assert await wait_threading_event(source.on_air, 15)
            _, colour = await next_segment_centre(store)
            assert is_broadcast(colour), colour
            # a second publisher for the same channel is turned away
            async with ffmpeg_publisher(server, KEY) as second:
                assert await asyncio.wait_for(second.wait(), 15) != 0
                assert second.stderr is not None
                said = await second.stderr.read()
                assert b"already has a broadcaster" in said, said
            assert source.on_air.is_set()
        # the publisher stopped: the slate is back within a segment or two
        colours = [(await next_segment_centre(store))[1] for _ in range(2)]
        assert is_slate(colours[-1]), colours
        assert not source.publishing
        assert (await store.current_epoch()) == epoch


async def test_a_wrong_stream_key_is_refused(redis: aioredis.Redis) -> None:
    async with ingest_server(redis, "rtmp", KEY, rtmp=True) as server:
        async with ffmpeg_publisher(server, "not-the-key") as publisher:
            assert await asyncio.wait_for(publisher.wait(), 15) != 0
            assert publisher.stderr is not None
            said = await publisher.stderr.read()
            # told why (onStatus NetStream.Publish.BadName), not just dropped
            assert b"wrong stream key" in said, said
        assert not server.sources["rtmp"].publishing


async def test_a_backup_feed_that_disagrees_is_told_why_and_the_primary_carries_on(
    redis: aioredis.Redis,
) -> None:
    why = "the backup feed is 640x360, the primary 320x180"
    async with (
        ingest_server(redis, "dual", KEY, rtmp=True) as server,
        ffmpeg_publisher(server, KEY),  # the primary, 320x180
    ):
        source = server.sources["dual"]
        assert await wait_threading_event(source.on_air, 15)
        async with ffmpeg_publisher(server, f"{KEY}?backup=1", "640x360") as backup:
            assert await asyncio.wait_for(backup.wait(), 15) != 0
            assert backup.stderr is not None
            said = await backup.stderr.read()
        assert why.encode() in said, said  # FFmpeg read the onStatus and logs why
        assert source.refused == why and source.on_air.is_set()
        # the operator is shown which feed was refused and why
        refused = server.channels.status["dual"].wait_until(lambda s: "refused_backup" in s)
        await asyncio.wait_for(refused, 5)
        shown = await redis.hgetall(ChannelKeys("dual").ingest)
        assert shown == {b"primary": b"320x180@30", b"refused_backup": why.encode()}, shown
        _, colour = await next_segment_centre(ChannelStore(redis, "dual"))
        assert is_broadcast(colour), colour  # the primary was never interrupted


async def test_a_backup_feed_that_agrees_stands_by_and_takes_over_when_the_primary_stops(
    redis: aioredis.Redis,
) -> None:
    async with (
        ingest_server(redis, "dual", KEY, rtmp=True) as server,
        contextlib.AsyncExitStack() as primary,
    ):
        source, status = server.sources["dual"], server.channels.status["dual"]
        await primary.enter_async_context(ffmpeg_publisher(server, KEY))
        assert await wait_threading_event(source.on_air, 15)
        async with ffmpeg_publisher(server, f"{KEY}?backup=1") as backup:
            both = {"primary": "320x180@30", "backup": "320x180@30"}
            await asyncio.wait_for(status.wait_until(lambda s: s == both), 15)
            await primary.aclose()  # the main encoder stops
            await asyncio.wait_for(status.wait_until(lambda s: s == {"primary": "320x180@30"}), 5)
            assert backup.returncode is None  # still pushing: it is the one on air now
            assert source.on_air.is_set() or await wait_threading_event(source.on_air, 5)
            _, colour = await next_segment_centre(ChannelStore(redis, "dual"))
            assert is_broadcast(colour), colour
