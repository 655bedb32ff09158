"""``livemesh ingest --any-channel``, as the demo runs it: a channel an operator created after
ingest started goes on air at its first broadcaster (no encoder before), stays on air
between broadcasters until it is ended, and a channel another packager runs
(``--not-channel``) is refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import redis.asyncio as aioredis

from kernel.channel_config_store import end_channel_config, put_channel_config
from live.ingest.keys import RedisStreamKeys
from live.ingest.server import IngestServer
from live.state import ChannelStore
from tests.ingest_helpers import is_broadcast, next_segment_centre, wait_threading_event
from tests.live_helpers import small_config
from tests.test_ingest_whip import publishing

HOUSE = "house"  # the demo's channel: its own packager, never ingest's


@contextlib.asynccontextmanager
async def open_ingest(redis: aioredis.Redis) -> AsyncIterator[IngestServer]:
    """Ingest as the demo starts it: no channel named, any other than HOUSE taken."""
    server = IngestServer(
        redis, [], RedisStreamKeys(redis), any_channel=True, not_channels=frozenset({HOUSE})
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def created(redis: aioredis.Redis, name: str, key: str) -> None:
    """What the channels service's CreateChannel leaves in Redis: the record and the key."""
    await put_channel_config(redis, small_config(name))
    await RedisStreamKeys(redis).issue(name, key)


async def test_a_channel_created_after_start_goes_on_air_at_its_first_broadcaster(
    redis: aioredis.Redis,
) -> None:
    async with open_ingest(redis) as server, aiohttp.ClientSession() as http:
        await created(redis, "late", "late-key")
        store = ChannelStore(redis, "late")
        assert await store.current_epoch() is None  # no broadcaster yet: nothing encodes
        url = f"http://127.0.0.1:{server.http_port}/whip"
        async with publishing(http, url, "late-key"):
            source = server.sources["late"]
            assert await wait_threading_event(source.on_air, 10)
            epoch = await store.current_epoch()
            assert epoch is not None
            _, colour = await next_segment_centre(store)
            assert is_broadcast(colour), colour
        # the broadcaster left: the channel stays on air (the slate) in the same epoch
        assert await store.current_epoch() == epoch
        await next_segment_centre(store)


async def test_one_start_for_broadcasters_arriving_together(redis: aioredis.Redis) -> None:
    async with open_ingest(redis) as server:
        await created(redis, "crowd", "crowd-key")
        first, second = await asyncio.gather(
            server.channels.source_for("crowd"), server.channels.source_for("crowd")
        )
        assert first is not None and first is second
        assert list(server.channels.channels) == ["crowd"]


async def test_another_packagers_channel_and_an_unknown_one_are_not_taken(
    redis: aioredis.Redis,
) -> None:
    async with open_ingest(redis) as server, aiohttp.ClientSession() as http:
        await created(redis, HOUSE, "house-key")
        await RedisStreamKeys(redis).issue("gone", "gone-key")  # a key with no channel record
        url = f"http://127.0.0.1:{server.http_port}/whip"
        for key, channel in (("house-key", HOUSE), ("gone-key", "gone")):
            headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"}
            async with http.post(url, data="v=0\r\n", headers=headers) as response:
                assert response.status == 404, await response.text()
                assert f"channel {channel} takes no ingest here" in await response.text()
        assert server.sources == {}
        assert await ChannelStore(redis, HOUSE).current_epoch() is None


async def test_an_ended_channel_goes_off_air_and_its_slate_stops_encoding(
    redis: aioredis.Redis,
) -> None:
    async with open_ingest(redis) as server:
        await created(redis, "brief", "brief-key")
        await created(redis, "stays", "stays-key")
        for name in ("brief", "stays"):  # on air, as at a broadcaster's first push: the slate
            assert await server.channels.source_for(name) is not None
        store = ChannelStore(redis, "brief")
        await next_segment_centre(store)  # the slate is being encoded and published
        run = server.channels.runs["brief"]

        await end_channel_config(redis, "brief")  # what the channels service's EndChannel does
        async with asyncio.timeout(10):
            await asyncio.shield(run)  # the encoder stopped
        assert set(server.sources) == set(server.channels.runs) == {"stays"}
        assert not server.channels.runs["stays"].done()  # the other channel is untouched
        # never taken again, even by a key that outlived it
        assert await server.channels.source_for("brief") is None
