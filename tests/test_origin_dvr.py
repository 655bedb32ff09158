"""DVR: a live MPD offering more time shift than the Redis window, the older segments
served by the origin from the archive (a real channel, archiver and directory store).

Waits are on the channel's chunk events and the archiver's progress; timeouts are bounds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from lxml import etree

from kernel.objectstore import LocalStore
from live.archive import Archiver
from live.archive_title import event_title, init_object, segment_object
from live.origin import build_app
from live.state import ChannelStore
from tests.live_helpers import running_channel, small_config, wait_for_segments
from tests.test_mpd import dash_schema  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(120)

WAIT_S = 60
DVR_S = 7200
WINDOW_S = 3  # three 1 s segments: the smallest window a channel may have


async def started(app: object) -> TestServer:
    server = TestServer(app, host="127.0.0.1")  # type: ignore[arg-type]
    await server.start_server()
    return server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    objects = LocalStore(tmp_path)
    yield objects
    await objects.close()


async def test_segments_behind_the_window_come_from_the_archive(
    redis: aioredis.Redis,
    store: LocalStore,
    http: aiohttp.ClientSession,
    dash_schema: etree.XMLSchema,  # noqa: F811
) -> None:
    config = dataclasses.replace(small_config("dvr"), window_s=WINDOW_S)
    live = ChannelStore(redis, config.name)
    archiver = Archiver(live, store)
    following = asyncio.create_task(archiver.run())
    with_dvr = await started(build_app(redis, vod_store=store, dvr_s=DVR_S))
    without = await started(build_app(redis))
    try:
        async with running_channel(live, config) as channel:
            assert channel.epoch is not None
            epoch, reps = channel.epoch, [r.id for r in channel.epoch.representations]
            await asyncio.wait_for(wait_for_segments(live, epoch.id, reps, WINDOW_S + 3), WAIT_S)
            await asyncio.wait_for(archiver.wait_for(epoch.id, 1), WAIT_S)
            title = event_title(config.name, epoch.id)
            # Redis has let segment 0 go (its TTL is the window), and so has the init
            # segment, as it does when a channel's chunks stop renewing it
            await redis.delete(live.keys.segment(epoch.id, "v360", 0))
            await redis.delete(live.keys.init(epoch.id, "v360"))
            media = f"/live/{config.name}/{epoch.id}/v360"

            async with http.get(without.make_url(f"{media}/0.m4s")) as plain:
                assert plain.status == 410
            async with http.get(with_dvr.make_url(f"{media}/0.m4s")) as old:
                assert old.status == 200
                assert "immutable" in old.headers["Cache-Control"]
                assert await old.read() == await store.get(segment_object(title, "v360", 0))
            ranged = {"Range": "bytes=0-99"}
            async with http.get(with_dvr.make_url(f"{media}/1.m4s"), headers=ranged) as part:
                assert part.status == 206
                whole = await store.get(segment_object(title, "v360", 1))
                assert await part.read() == whole[:100]
                assert part.headers["Content-Range"] == f"bytes 0-99/{len(whole)}"
            async with http.get(with_dvr.make_url(f"{media}/init.mp4")) as init:
                assert init.status == 200
                assert await init.read() == await store.get(init_object(title, "v360"))

            mpd_path = f"/live/{config.name}/manifest.mpd"
            async with http.get(with_dvr.make_url(mpd_path)) as answer:
                mpd = etree.fromstring(await answer.read())
            dash_schema.assertValid(mpd)
            assert mpd.get("timeShiftBufferDepth") == f"PT{DVR_S}S"
            async with http.get(without.make_url(mpd_path)) as answer:
                plain_mpd = etree.fromstring(await answer.read())
            assert plain_mpd.get("timeShiftBufferDepth") == f"PT{WINDOW_S}S"
    finally:
        following.cancel()
        await with_dvr.close()
        await without.close()


async def test_a_segment_neither_in_the_window_nor_archived_is_gone(
    redis: aioredis.Redis, store: LocalStore, http: aiohttp.ClientSession
) -> None:
    """No archiver ran: the DVR origin still answers 410 behind the window, never 500."""
    config = dataclasses.replace(small_config("dvr2"), window_s=WINDOW_S)
    live = ChannelStore(redis, config.name)
    origin = await started(build_app(redis, vod_store=store, dvr_s=DVR_S))
    try:
        async with running_channel(live, config) as channel:
            assert channel.epoch is not None
            epoch, reps = channel.epoch, [r.id for r in channel.epoch.representations]
            await asyncio.wait_for(wait_for_segments(live, epoch.id, reps, WINDOW_S + 2), WAIT_S)
            path = f"/live/{config.name}/{epoch.id}/v360/0.m4s"
            async with http.get(origin.make_url(path)) as answer:
                assert answer.status == 410
                assert "archived" in await answer.text()
    finally:
        await origin.close()
