"""The channels service is the one writer of a channel's configuration; the packager runs it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from lxml import etree

from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import (
    get_channel_config,
    put_channel_config,
    restore_channel_config,
    wait_for_channel_config,
)
from kernel.rpc.clients import RpcChannelFactory
from live.state import ChannelStore
from livemesh.channels.v1 import channels_pb2 as pb
from livemesh.channels.v1 import channels_pb2_grpc as pb_grpc
from services.channels.service import ChannelService
from tests.ingest_helpers import origin_server
from tests.services.conftest import Metadata, Presenting, Start

ROOT = Path(__file__).resolve().parent.parent.parent
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


@pytest.mark.timeout(120)
async def test_the_packager_runs_a_created_channel_as_it_was_created(
    start: Start,
    factory: RpcChannelFactory,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
    operator_auth: Metadata,
) -> None:
    running = await start(ChannelService(redis_url, database_url, seed_demo=False))
    stub = Presenting(factory.stub(pb_grpc.ChannelServiceStub, running.target), operator_auth)
    # started first and with no flags: it waits for the channel to be created
    packager = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "command.cli", "channel", "studio", "--redis-url", redis_url,
        cwd=ROOT, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await stub.CreateChannel(
            pb.CreateChannelRequest(
                channel_id="studio",
                channel=pb.Channel(
                    display_name="Studio",
                    video_ladder=[
                        pb.VideoRung(name="v360", width=640, height=360, bitrate=600_000),
                        pb.VideoRung(name="v180", width=320, height=180, bitrate=200_000),
                    ],
                    latency=pb.LatencySettings(segment_ms=1000, chunk_ms=200),
                ),
            )
        )
        store = ChannelStore(redis, "studio")
        async with asyncio.timeout(60):
            async for _event in store.events(after="0-0"):
                break  # the first chunk: the packager is on air
        async with (
            origin_server(redis) as base,
            aiohttp.ClientSession() as http,
            http.get(f"{base}/live/studio/manifest.mpd") as response,
        ):
            assert response.status == 200
            mpd = etree.fromstring(await response.read())
    finally:
        packager.terminate()
        await asyncio.wait_for(packager.wait(), timeout=30)

    video = mpd.xpath("//d:AdaptationSet[@contentType='video']", namespaces=NS)[0]
    rungs = video.xpath("d:Representation", namespaces=NS)
    assert [(r.get("id"), r.get("height")) for r in rungs] == [("v360", "360"), ("v180", "180")]
    for template in mpd.xpath("//d:SegmentTemplate", namespaces=NS):
        assert int(template.get("duration")) == int(template.get("timescale"))  # 1 s segments


async def test_a_reader_waits_for_the_record_and_gives_up_in_time(redis: aioredis.Redis) -> None:
    waiting = asyncio.create_task(wait_for_channel_config(redis, "late", timeout_s=30))
    await asyncio.sleep(0)  # the reader starts first (either order must work)
    config = ChannelConfig("late", segment_ms=1000, chunk_ms=100, window_s=10)
    await put_channel_config(redis, config)
    assert await asyncio.wait_for(waiting, timeout=10) == config
    with pytest.raises(TimeoutError, match="no configuration"):
        await wait_for_channel_config(redis, "never", timeout_s=0.2)


async def test_a_restore_never_overwrites_the_record(redis: aioredis.Redis) -> None:
    created = ChannelConfig("kept", segment_ms=1000, chunk_ms=100, window_s=10)
    await put_channel_config(redis, created)
    await restore_channel_config(redis, ChannelConfig("kept"))
    assert await get_channel_config(redis, "kept") == created
    await redis.flushdb()  # Redis lost everything: the running packager puts its copy back
    await restore_channel_config(redis, created)
    assert await get_channel_config(redis, "kept") == created
