"""EndChannel cuts a broadcaster still pushing: the real channels service ends the channel,
the real ingest process tells its real pusher why and closes it, and the old key is dead.

Debian's ffmpeg pushes over RTMP and must exit having read the server's ``onStatus``;
an aiortc broadcaster pushes over WHIP and must see its peer connection closed (the
server's DTLS close_notify), not time out.  Both within :data:`CUT_WITHIN_S` of the
EndChannel answer, waited for on the pusher's own end (process exit, state change).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import redis.asyncio as aioredis

from kernel.channel_config_store import get_channel_config
from kernel.rpc.clients import RpcChannelFactory
from live.ingest.keys import RedisStreamKeys
from live.ingest.server import IngestServer
from livemesh.channels.v1 import channels_pb2 as pb
from livemesh.channels.v1 import channels_pb2_grpc as pb_grpc
from services.channels.service import ChannelService
from tests.ingest_helpers import wait_threading_event
from tests.services.conftest import Metadata, Presenting, Start
from tests.test_ingest_rtmp import ffmpeg_publisher
from tests.test_ingest_whip import make_offer, publishing

CUT_WITHIN_S = 5.0  # EndChannel answered -> the pusher's connection is closed, at most
ON_AIR_WITHIN_S = 15.0


@dataclass
class Ended:
    """An ingest process serving one channel the channels service created, and its key."""

    server: IngestServer
    stub: Presenting
    channel: str
    key: str

    async def end(self) -> float:
        """EndChannel, as the console's End does; returns when it answered (monotonic s)."""
        ended = await self.stub.EndChannel(pb.EndChannelRequest(name=f"channels/{self.channel}"))
        assert ended.channel.state == pb.CHANNEL_STATE_ENDED
        return time.monotonic()


@pytest.fixture
async def channels(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata, redis_url: str,
    database_url: str,
) -> Presenting:  # fmt: skip
    """The real channels service, called as an operator (the console's End is this call)."""
    running = await start(ChannelService(redis_url, database_url))
    return Presenting(factory.stub(pb_grpc.ChannelServiceStub, running.target), operator_auth)


@contextlib.asynccontextmanager
async def created_and_ingested(
    channels: Presenting, redis: aioredis.Redis, channel: str
) -> AsyncIterator[Ended]:
    """The channel created through the service (one small rung), on air in ingest (slate)."""
    created = await channels.CreateChannel(
        pb.CreateChannelRequest(
            channel_id=channel,
            request_id=channel,
            channel=pb.Channel(
                display_name=channel,
                video_ladder=[pb.VideoRung(name="v180", width=320, height=180, bitrate=200_000)],
                latency=pb.LatencySettings(segment_ms=1000, chunk_ms=200, window_s=30),
            ),
        )
    )
    config = await get_channel_config(redis, channel)
    assert config is not None
    server = IngestServer(redis, [config], RedisStreamKeys(redis), rtmp_port=0)
    await server.start()
    try:
        yield Ended(server, channels, channel, created.stream_key)
    finally:
        await server.stop()


async def test_ending_a_channel_cuts_its_rtmp_pusher_and_its_key(
    channels: Presenting, redis: aioredis.Redis
) -> None:
    async with created_and_ingested(channels, redis, "cutrtmp") as on_air:
        source = on_air.server.sources["cutrtmp"]
        async with ffmpeg_publisher(on_air.server, on_air.key) as pusher:
            assert await wait_threading_event(source.on_air, ON_AIR_WITHIN_S)
            status = on_air.server.channels.status["cutrtmp"]
            await asyncio.wait_for(status.wait_until(lambda s: "primary" in s), 5)
            live = await on_air.stub.GetChannel(pb.GetChannelRequest(name="channels/cutrtmp"))
            assert live.channel.live_status.ingest.primary == "320x180@30"  # what the console shows
            answered = await on_air.end()
            assert await asyncio.wait_for(pusher.wait(), CUT_WITHIN_S) != 0
            took_s = time.monotonic() - answered
            assert pusher.stderr is not None
            said = await pusher.stderr.read()
            # FFmpeg read our onStatus (level error) and says why it stopped
            assert b"channel cutrtmp has ended" in said, said
        assert took_s < CUT_WITHIN_S
        assert "cutrtmp" not in on_air.server.sources and not source.publishing
        # the old key publishes nothing any more
        async with ffmpeg_publisher(on_air.server, on_air.key) as again:
            assert await asyncio.wait_for(again.wait(), 15) != 0
            assert again.stderr is not None
            assert b"wrong stream key" in await again.stderr.read()


async def test_ending_a_channel_closes_its_whip_session_and_its_key(
    channels: Presenting, redis: aioredis.Redis
) -> None:
    async with (
        created_and_ingested(channels, redis, "cutwhip") as on_air,
        aiohttp.ClientSession() as http,
    ):
        source = on_air.server.sources["cutwhip"]
        url = f"http://127.0.0.1:{on_air.server.http_port}/whip"
        async with publishing(http, url, on_air.key) as (pc, location):
            closed = asyncio.Event()

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState in ("closed", "failed"):
                    closed.set()

            assert await wait_threading_event(source.on_air, ON_AIR_WITHIN_S)
            answered = await on_air.end()
            await asyncio.wait_for(closed.wait(), CUT_WITHIN_S)
            took_s = time.monotonic() - answered
            # closed by the server's DTLS close_notify, not failed by a consent timeout
            assert pc.connectionState == "closed"
            assert took_s < CUT_WITHIN_S
            assert on_air.server.whip.sessions == {} and not source.publishing
            auth = {"Authorization": f"Bearer {on_air.key}"}
            session_url = f"http://127.0.0.1:{on_air.server.http_port}{location}"
            async with http.delete(session_url, headers=auth) as response:
                assert response.status == 401  # the key was revoked with the channel
        retry = await make_offer()
        try:
            headers = {**auth, "Content-Type": "application/sdp"}
            async with http.post(url, data=retry.localDescription.sdp, headers=headers) as r:
                assert r.status == 401, await r.text()
        finally:
            await retry.close()
