"""Channels: lifecycle, stream keys, live status read from the manifest state in Redis."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from kernel.channel_config_store import channel_ended
from kernel.epoch import Epoch, Representation
from kernel.rpc.clients import RpcChannelFactory
from live.state import ChannelStore
from livemesh.channels.v1 import channels_pb2 as pb
from livemesh.channels.v1 import channels_pb2_grpc as pb_grpc
from services.channels.service import ChannelService
from tests.services.conftest import Metadata, Presenting, Start, expect_error


async def test_lifecycle_stream_keys_and_live_status(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(ChannelService(redis_url, database_url))
    stub = Presenting(factory.stub(pb_grpc.ChannelServiceStub, running.target), operator_auth)
    demo = (await stub.GetChannel(pb.GetChannelRequest(name="channels/demo"))).channel
    assert demo.state == pb.CHANNEL_STATE_IDLE and len(demo.video_ladder) == 3

    created = await stub.CreateChannel(
        pb.CreateChannelRequest(
            channel_id="sports",
            request_id="c1",
            channel=pb.Channel(
                display_name="Sports",
                video_ladder=[pb.VideoRung(name="v540", width=960, height=540, bitrate=1_800_000)],
                latency=pb.LatencySettings(segment_ms=1000, chunk_ms=200),
            ),
        )
    )
    again = await stub.CreateChannel(
        pb.CreateChannelRequest(
            channel_id="sports", request_id="c1", channel=pb.Channel(display_name="Sports")
        )
    )
    assert again.stream_key == created.stream_key  # a retry, not a second channel
    assert created.channel.latency.target_latency_ms == 1500
    store = ChannelStore(redis, "sports")
    config = await store.get_config()  # the packager's config was written
    assert config is not None and config.segment_ms == 1000 and config.video[0].name == "v540"

    checked = await stub.CheckStreamKey(pb.CheckStreamKeyRequest(stream_key=created.stream_key))
    assert checked.channel == "channels/sports"
    rotated = await stub.RotateStreamKey(pb.RotateStreamKeyRequest(name="channels/sports"))
    await expect_error(
        stub.CheckStreamKey(pb.CheckStreamKeyRequest(stream_key=created.stream_key)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert (
        await stub.CheckStreamKey(pb.CheckStreamKeyRequest(stream_key=rotated.stream_key))
    ).channel == "channels/sports"

    # the packager goes on air: the status comes from the manifest state
    epoch = Epoch(
        "e1",
        1_700_000_000_000,
        (Representation("v540", "video", "avc1.64001f", 1_800_000, 90000, 960, 540, 30),),
    )
    await store.start_epoch(epoch, {"v540": b"init"}, window_s=30)
    await store.publish_chunk(epoch, "v540", 7, 3, b"chunk", last=False, window_s=30)
    live = (await stub.GetChannel(pb.GetChannelRequest(name="channels/sports"))).channel
    assert live.state == pb.CHANNEL_STATE_LIVE
    assert (live.live_status.epoch, live.live_status.live_segment, live.live_status.live_chunk) == (
        "e1",
        7,
        3,
    )
    assert list(live.live_status.representations) == ["v540"]

    listed = await stub.ListChannels(pb.ListChannelsRequest(page_size=1))
    rest = await stub.ListChannels(pb.ListChannelsRequest(page_token=listed.next_page_token))
    assert [c.name for c in [*listed.channels, *rest.channels]] == [
        "channels/demo",
        "channels/sports",
    ]

    assert not await channel_ended(redis, "sports")
    ended = await stub.EndChannel(pb.EndChannelRequest(name="channels/sports"))
    assert ended.channel.state == pb.CHANNEL_STATE_ENDED
    assert await channel_ended(redis, "sports")  # what ingest waits on to take it off air
    await expect_error(
        stub.CheckStreamKey(pb.CheckStreamKeyRequest(stream_key=rotated.stream_key)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_channel_bad_input(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(ChannelService(redis_url, database_url))
    stub = Presenting(factory.stub(pb_grpc.ChannelServiceStub, running.target), operator_auth)
    cases = [
        (pb.CreateChannelRequest(channel=pb.Channel(display_name="x")), "channel_id"),
        (
            pb.CreateChannelRequest(channel_id="Bad!", channel=pb.Channel(display_name="x")),
            "channel_id",
        ),
        (pb.CreateChannelRequest(channel_id="ok"), "channel.display_name"),
        (
            pb.CreateChannelRequest(
                channel_id="ok",
                channel=pb.Channel(
                    display_name="x",
                    video_ladder=[pb.VideoRung(name="v", width=0, height=2, bitrate=1)],
                ),
            ),
            "channel.video_ladder[0].width",
        ),
        (
            pb.CreateChannelRequest(
                channel_id="ok",
                channel=pb.Channel(
                    display_name="x", latency=pb.LatencySettings(segment_ms=2000, chunk_ms=300)
                ),
            ),
            "channel",
        ),
    ]
    for request, field in cases:
        await expect_error(stub.CreateChannel(request), grpc.StatusCode.INVALID_ARGUMENT, field)
    await expect_error(
        stub.CreateChannel(
            pb.CreateChannelRequest(channel_id="demo", channel=pb.Channel(display_name="again"))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await expect_error(
        stub.GetChannel(pb.GetChannelRequest(name="channels/none")), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stub.GetChannel(pb.GetChannelRequest(name="demo")), grpc.StatusCode.INVALID_ARGUMENT, "name"
    )
    await expect_error(
        stub.CheckStreamKey(pb.CheckStreamKeyRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stream_key",
    )
