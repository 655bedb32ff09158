"""End to end with real independent publishers, through the real origin, to a real player.

FFmpeg 8.1's own ``whip`` muxer (PyAV's, in its own process) and Debian's ``ffmpeg``
CLI over RTMP publish a picture with its send time as a bar code.  Debian's
ffprobe plays the channel's MPD from the origin and decodes every rung; the bar
code of each chunk read from the origin gives the ingest-to-origin latency; a
disconnect and reconnect keeps the epoch, the Period and the segment numbering.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from lxml import etree

from live.ingest.server import IngestServer
from live.state import ChannelStore, ChunkEvent
from tests.ingest_helpers import (
    Publisher,
    chunk_latencies,
    ffprobe_frame_counts,
    ingest_server,
    is_broadcast,
    is_slate,
    next_segment_centre,
    origin_server,
    p256_certificate,
    start_rtmp_publisher,
    start_whip_publisher,
    wait_threading_event,
)
from tests.test_mpd import schema_path

KEY = "e2e-secret-key"
LATENCY_LIMIT_MS = 2500  # ingest to origin, per chunk, median; measured ~0.5 s on 2 cores


@contextlib.asynccontextmanager
async def segment_log(store: ChannelStore) -> AsyncIterator[list[ChunkEvent]]:
    """Every completed segment of the channel while the body runs."""
    done: list[ChunkEvent] = []

    async def collect() -> None:
        async for event in store.events():
            if event.last:
                done.append(event)

    task = asyncio.create_task(collect())
    try:
        yield done
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def mpd_period(http: aiohttp.ClientSession, url: str) -> str:
    """The MPD's one Period id, after checking it against the DASH schema."""
    async with http.get(url) as response:
        assert response.status == 200
        tree = etree.fromstring(await response.read())
    path = schema_path()
    if path is not None:  # DESIGN.md §3: CI and this workplace always have it
        schema = etree.XMLSchema(etree.parse(str(path)))
        assert schema.validate(tree), schema.error_log
    assert tree.get("type") == "dynamic"
    periods = tree.findall("{urn:mpeg:dash:schema:mpd:2011}Period")
    assert len(periods) == 1
    return str(periods[0].get("id"))


async def plays_through_the_origin(
    server: IngestServer, redis: aioredis.Redis, channel: str, base: str
) -> list[int]:
    """ffprobe decodes every rung from the origin's MPD; returns chunk latencies meanwhile."""
    store = ChannelStore(redis, channel)
    async with aiohttp.ClientSession() as http:
        probe = asyncio.create_task(ffprobe_frame_counts(f"{base}/live/{channel}/manifest.mpd"))
        latencies = await chunk_latencies(http, base, store, "v180", segments=2)
        counts = await probe
    assert len(counts) == 3, counts  # two video rungs and the audio
    assert min(counts.values()) >= 10, counts  # every rung decodes (a busy machine skips)
    return latencies


async def check_end_to_end(
    redis: aioredis.Redis,
    server: IngestServer,
    channel: str,
    base: str,
    publish: Callable[[], Awaitable[Publisher]],
) -> None:
    """On air, played by ffprobe, latency measured, then a disconnect and a reconnect."""
    store = ChannelStore(redis, channel)
    source = server.sources[channel]
    epoch = await store.current_epoch()
    mpd_url = f"{base}/live/{channel}/manifest.mpd"
    async with aiohttp.ClientSession() as http, segment_log(store) as segments:
        period = await mpd_period(http, mpd_url)
        publisher: Publisher = await publish()
        try:
            assert await wait_threading_event(source.on_air, 20)
            latencies = await plays_through_the_origin(server, redis, channel, base)
            assert len(latencies) >= 5, latencies
            assert 0 < statistics.median(latencies) < LATENCY_LIMIT_MS, latencies
        finally:
            await publisher.stop()
        # the broadcaster left: the slate within a few segments, then a new broadcaster
        colours = [(await next_segment_centre(store))[1] for _ in range(4)]
        assert any(is_slate(c) for c in colours), colours
        publisher = await publish()
        try:
            assert await wait_threading_event(source.on_air, 20)
            _, colour = await next_segment_centre(store)
            assert is_broadcast(colour), colour
        finally:
            await publisher.stop()
        assert (await store.current_epoch()) == epoch
        assert await mpd_period(http, mpd_url) == period
    numbers = sorted({e.segment for e in segments if e.rep == "v360"})
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), numbers  # no gap, no restart
    assert epoch is not None and {e.epoch for e in segments} == {epoch.id}


@pytest.mark.timeout(240)  # publisher start-up, ffprobe's 6 s and a reconnect, on busy cores
async def test_ffmpeg_whip_muxer_publishes_and_the_origin_plays_it(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    cert = p256_certificate(tmp_path)
    async with ingest_server(redis, "wh", KEY) as server, origin_server(redis) as base:
        url = f"http://127.0.0.1:{server.http_port}/whip/wh"

        async def publish() -> Publisher:
            return await start_whip_publisher(url, KEY, cert)

        await check_end_to_end(redis, server, "wh", base, publish)


@pytest.mark.timeout(240)
async def test_ffmpeg_cli_publishes_over_rtmp_and_the_origin_plays_it(
    redis: aioredis.Redis,
) -> None:
    async with ingest_server(redis, "rt", KEY, rtmp=True) as server, origin_server(redis) as base:
        assert server.rtmp is not None
        url = f"rtmp://127.0.0.1:{server.rtmp.port}/live/{KEY}"

        async def publish() -> Publisher:
            return await start_rtmp_publisher(url)

        await check_end_to_end(redis, server, "rt", base, publish)
