"""Channel service: live channel lifecycle and ingest stream keys.

The channel record is kept in Redis beside the channel's manifest state (same
hash tag, so one Cluster slot); creating a channel also writes its
:class:`live.ladder.ChannelConfig`, which the packager reads. Live status is
read from the manifest state through :class:`live.state.ChannelStore`: the
channel is LIVE while the packager has a current epoch.

=============================  ================================================
``lm:{ch}:channel``            the Channel message (JSON, without live status)
``lm:{ch}:streamkey``          SHA-256 of the current stream key
``lm:streamkeys``              hash SHA-256(stream key) -> channel id
``lm:channels``                sorted set of channel ids (the list order)
``lm:chreq:{request_id}``      result of a mutating call, for retries (24 h)
=============================  ================================================
Stream keys are shown once and stored only as hashes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import secrets
import time

import grpc
from google.protobuf import json_format

from live.ladder import DEFAULT_AUDIO, DEFAULT_VIDEO_LADDER, AudioRung, ChannelConfig, VideoRung
from live.state import ChannelStore
from livemesh.channels.v1 import channels_pb2 as pb
from livemesh.channels.v1 import channels_pb2_grpc as pb_grpc
from services.common import validate
from services.common.clients import ChannelFactory
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.process import Service, connect_redis, service_main
from services.common.server import ServiceSpec

DEFAULT_TARGET_LATENCY_MS = 1500
IDEMPOTENCY_TTL_S = 24 * 3600
DEMO_CHANNEL = "demo"


def _hash(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode()).hexdigest()


def channel_config(channel_id: str, channel: pb.Channel) -> ChannelConfig:
    """The packager's config for ``channel``; INVALID_ARGUMENT naming the field when it is bad."""
    for i, rung in enumerate(channel.video_ladder):
        validate.resource_id(rung.name, f"channel.video_ladder[{i}].name")
        for attr in ("width", "height", "bitrate"):
            if getattr(rung, attr) <= 0:
                raise InvalidArgument(f"channel.video_ladder[{i}].{attr}", "must be positive")
    latency = channel.latency
    for attr in ("segment_ms", "chunk_ms", "window_s", "target_latency_ms"):
        if getattr(latency, attr) < 0:
            raise InvalidArgument(f"channel.latency.{attr}", "must not be negative")
    if channel.audio_bitrate < 0 or channel.frame_rate < 0:
        raise InvalidArgument("channel.audio_bitrate" if channel.audio_bitrate < 0
                              else "channel.frame_rate", "must not be negative")
    ladder = tuple(VideoRung(r.name, r.width, r.height, r.bitrate) for r in channel.video_ladder)
    try:
        return ChannelConfig(
            name=channel_id,
            video=ladder or DEFAULT_VIDEO_LADDER,
            audio=AudioRung(DEFAULT_AUDIO.name, channel.audio_bitrate or DEFAULT_AUDIO.bitrate),
            frame_rate=channel.frame_rate or 30,
            segment_ms=latency.segment_ms or 2000,
            chunk_ms=latency.chunk_ms or 200,
            window_s=latency.window_s or 60,
        )
    except ValueError as exc:  # the timing model's own checks (DESIGN.md §3)
        raise InvalidArgument("channel", str(exc)) from exc


def _normalised(channel_id: str, channel: pb.Channel, config: ChannelConfig) -> pb.Channel:
    out = pb.Channel(name=f"channels/{channel_id}",
                     display_name=validate.text(channel.display_name, "channel.display_name", 1,
                                                100),
                     audio_bitrate=config.audio.bitrate, frame_rate=config.frame_rate,
                     state=pb.CHANNEL_STATE_IDLE)
    out.video_ladder.extend(pb.VideoRung(name=r.name, width=r.width, height=r.height,
                                         bitrate=r.bitrate) for r in config.video)
    out.latency.CopyFrom(pb.LatencySettings(
        segment_ms=config.segment_ms, chunk_ms=config.chunk_ms, window_s=config.window_s,
        target_latency_ms=channel.latency.target_latency_ms or DEFAULT_TARGET_LATENCY_MS))
    out.create_time.FromNanoseconds(time.time_ns())
    return out


def _channel_id(name: str) -> str:
    (channel_id,) = validate.parse_name(name, "name", "channels")
    return channel_id


class ChannelServicer(pb_grpc.ChannelServiceServicer):
    def __init__(self, redis_url: str) -> None:
        self.redis = connect_redis(redis_url)
        # the manifest state is binary (chunks): its own client, replies as bytes
        self.state_redis = connect_redis(redis_url, decode=False)

    async def _load(self, channel_id: str) -> pb.Channel:
        raw = await self.redis.get(f"lm:{{{channel_id}}}:channel")
        if raw is None:
            raise NotFound(f"channels/{channel_id} not found")
        channel = json_format.Parse(raw, pb.Channel())
        await self._live_status(channel_id, channel)
        return channel

    async def _live_status(self, channel_id: str, channel: pb.Channel) -> None:
        if channel.state == pb.CHANNEL_STATE_ENDED:
            return
        store = ChannelStore(self.state_redis, channel_id)
        epoch = await store.current_epoch()
        if epoch is None:
            channel.state = pb.CHANNEL_STATE_IDLE
            return
        channel.state = pb.CHANNEL_STATE_LIVE
        status = channel.live_status
        status.epoch = epoch.id
        status.epoch_start_time.FromMilliseconds(epoch.start_ms)
        status.representations.extend(r.id for r in epoch.representations)
        if epoch.representations:
            position = await store.position(epoch.id, epoch.representations[0].id)
            if position is not None:
                status.live_segment, status.live_chunk = position.segment, position.chunk

    async def _save(self, channel_id: str, channel: pb.Channel) -> None:
        stored = pb.Channel()
        stored.CopyFrom(channel)
        stored.ClearField("live_status")
        await self.redis.set(f"lm:{{{channel_id}}}:channel",
                             json_format.MessageToJson(stored, indent=None))

    async def _new_stream_key(self, channel_id: str) -> str:
        stream_key = f"lmsk_{channel_id}_{secrets.token_urlsafe(24)}"
        old = await self.redis.get(f"lm:{{{channel_id}}}:streamkey")
        async with self.redis.pipeline(transaction=True) as pipe:
            if old:
                pipe.hdel("lm:streamkeys", old)
            pipe.hset("lm:streamkeys", _hash(stream_key), channel_id)
            pipe.set(f"lm:{{{channel_id}}}:streamkey", _hash(stream_key))
            await pipe.execute()
        return stream_key

    async def _replay(self, request_id: str) -> dict[str, str] | None:
        if not request_id:
            return None
        raw = await self.redis.get(f"lm:chreq:{request_id}")
        return json.loads(raw) if raw else None

    async def _remember(self, request_id: str, result: dict[str, str]) -> None:
        if request_id:
            await self.redis.set(f"lm:chreq:{request_id}", json.dumps(result),
                                 ex=IDEMPOTENCY_TTL_S)

    async def create(self, channel_id: str, channel: pb.Channel, request_id: str = "",
                     keep_config: bool = False) -> tuple[pb.Channel, str]:
        """Create a channel; with ``keep_config`` a config a packager already runs stays."""
        earlier = await self._replay(request_id)
        if earlier is not None:
            return await self._load(earlier["channel"]), earlier["stream_key"]
        config = channel_config(channel_id, channel)
        created = _normalised(channel_id, channel, config)
        if not await self.redis.set(f"lm:{{{channel_id}}}:channel", "{}", nx=True):
            raise AlreadyExists(f"channels/{channel_id} exists", "channel_id")
        await self._save(channel_id, created)
        await self.redis.zadd("lm:channels", {channel_id: 0})
        store = ChannelStore(self.state_redis, channel_id)
        if not keep_config or await store.get_config() is None:
            await store.put_config(config)
        stream_key = await self._new_stream_key(channel_id)
        await self._remember(request_id, {"channel": channel_id, "stream_key": stream_key})
        return await self._load(channel_id), stream_key

    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateChannelResponse:
        channel_id = validate.resource_id(request.channel_id, "channel_id")
        validate.text(request.channel.display_name, "channel.display_name", 1, 100)
        channel, stream_key = await self.create(
            channel_id, request.channel, validate.request_id(request.request_id))
        return pb.CreateChannelResponse(channel=channel, stream_key=stream_key)

    async def GetChannel(
        self, request: pb.GetChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelResponse:
        return pb.GetChannelResponse(channel=await self._load(_channel_id(request.name)))

    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChannelsResponse:
        size = validate.page_size(request.page_size, 20, 100)
        offset = validate.offset_from_token(request.page_token)
        ids = await self.redis.zrange("lm:channels", offset, offset + size)
        channels = [await self._load(str(i)) for i in ids[:size]]
        token = validate.next_offset_token(offset, size, len(ids))
        return pb.ListChannelsResponse(channels=channels, next_page_token=token)

    async def EndChannel(
        self, request: pb.EndChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndChannelResponse:
        channel_id = _channel_id(request.name)
        validate.request_id(request.request_id)
        channel = await self._load(channel_id)
        channel.state = pb.CHANNEL_STATE_ENDED
        await self._save(channel_id, channel)
        old = await self.redis.get(f"lm:{{{channel_id}}}:streamkey")
        if old:
            await self.redis.hdel("lm:streamkeys", old)
        return pb.EndChannelResponse(channel=channel)

    async def RotateStreamKey(
        self, request: pb.RotateStreamKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateStreamKeyResponse:
        channel_id = _channel_id(request.name)
        request_id = validate.request_id(request.request_id)
        earlier = await self._replay(request_id)
        if earlier is not None:
            return pb.RotateStreamKeyResponse(stream_key=earlier["stream_key"])
        channel = await self._load(channel_id)
        if channel.state == pb.CHANNEL_STATE_ENDED:
            raise InvalidArgument("name", "the channel has ended")
        stream_key = await self._new_stream_key(channel_id)
        await self._remember(request_id, {"channel": channel_id, "stream_key": stream_key})
        return pb.RotateStreamKeyResponse(stream_key=stream_key)

    async def CheckStreamKey(
        self, request: pb.CheckStreamKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckStreamKeyResponse:
        stream_key = validate.required(request.stream_key, "stream_key", max_len=200)
        channel_id = await self.redis.hget("lm:streamkeys", _hash(stream_key))
        if channel_id is None:
            raise NotFound("no channel has this stream key")
        return pb.CheckStreamKeyResponse(channel=f"channels/{channel_id!s}")


class ChannelService(Service):
    def __init__(self, redis_url: str, seed_demo: bool = True) -> None:
        self.servicer = ChannelServicer(redis_url)
        self.seed_demo = seed_demo

    def specs(self) -> list[ServiceSpec]:
        return [ServiceSpec(
            pb.DESCRIPTOR.services_by_name["ChannelService"].full_name,
            self.servicer, pb_grpc.add_ChannelServiceServicer_to_server,
        )]

    async def start(self) -> None:
        if self.seed_demo:
            with contextlib.suppress(AlreadyExists):  # made by an earlier start
                await self.servicer.create(
                    DEMO_CHANNEL, pb.Channel(display_name="Livemesh Demo"), keep_config=True)

    async def close(self) -> None:
        await self.servicer.redis.aclose()
        await self.servicer.state_redis.aclose()


async def build(args: argparse.Namespace, factory: ChannelFactory) -> Service:
    return ChannelService(args.redis_url, seed_demo=not args.no_demo)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-demo", action="store_true", help="do not create channel 'demo'")


def main(argv: list[str] | None = None) -> int:
    return service_main("channels", argv, build, add_arguments, needs_redis=True)
