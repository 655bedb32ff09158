"""Channel service: live channel lifecycle and ingest stream keys.

Channel records and stream-key digests are kept in the relational database
(:mod:`.store`), so a Redis that restarts empty loses no channel and no key.  Creating a
channel writes its configuration record (:mod:`kernel.channel_config_store`) into Redis:
this service is that record's one writer, and the packager and ingest run the channel
as it says; :mod:`.mirror` writes the copies back when Redis lost them.  Live status is
read from the manifest state: the channel is LIVE while the packager has a current
epoch.  Stream keys are shown once and stored only as digests (:mod:`kernel.stream_keys`).

At start the service creates channel ``demo`` (unless ``--no-demo``): the local
stack's packager (``livemesh channel demo``) waits for its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import grpc

from kernel.channel_config import DEFAULT_VIDEO_LADDER, VideoRung
from kernel.channel_config_store import end_channel_config, put_channel_config
from kernel.config import ChannelsSettings
from kernel.db import connect_database
from kernel.epoch import Epoch, Position
from kernel.keys import ChannelKeys, channel_request
from kernel.rpc import access, validate
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import AlreadyExists, InvalidArgument, NotFound
from kernel.rpc.process import Service, connect_redis, service_main
from kernel.rpc.server import ServiceSpec
from kernel.stream_keys import (
    channel_for_stream_key,
    issue_stream_key,
    key_digest,
    new_stream_key,
    revoke_stream_key,
)
from livemesh.channels.v1 import channels_pb2 as pb
from livemesh.channels.v1 import channels_pb2_grpc as pb_grpc
from services.channels.mirror import RedisMirror
from services.channels.records import channel_config, normalised
from services.channels.store import CHANNEL_CACHE_S, ChannelExists, ChannelStore

IDEMPOTENCY_TTL_S = 24 * 3600
DEMO_CHANNEL = "demo"


def select_rungs(names: str) -> tuple[VideoRung, ...]:
    """The default ladder, or the named subset of it (e.g. ``"v480,v360"``)."""
    if not names:
        return DEFAULT_VIDEO_LADDER
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {r.name: r for r in DEFAULT_VIDEO_LADDER}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"livemesh channels: unknown rungs {unknown}; known: {sorted(known)}")
    return tuple(known[n] for n in wanted)


def _channel_id(name: str) -> str:
    (channel_id,) = validate.parse_name(name, "name", "channels")
    return channel_id


class ChannelServicer(pb_grpc.ChannelServiceServicer):
    def __init__(self, redis_url: str, store: ChannelStore) -> None:
        self.redis = connect_redis(redis_url)
        self.store = store

    async def _load(self, channel_id: str) -> pb.Channel:
        channel = await self.store.get(channel_id)
        if channel is None:
            raise NotFound(f"channels/{channel_id} not found")
        await self._live_status(channel_id, channel)
        return channel

    async def _live_status(self, channel_id: str, channel: pb.Channel) -> None:
        if channel.state == pb.CHANNEL_STATE_ENDED:
            return
        keys = ChannelKeys(channel_id)
        raw_epoch = await self.redis.get(keys.epoch)
        if raw_epoch is None:
            channel.state = pb.CHANNEL_STATE_IDLE
            return
        epoch = Epoch.from_json(raw_epoch)
        channel.state = pb.CHANNEL_STATE_LIVE
        status = channel.live_status
        status.epoch = epoch.id
        status.epoch_start_time.FromMilliseconds(epoch.start_ms)
        status.representations.extend(r.id for r in epoch.representations)
        feeds = await self.redis.hgetall(keys.ingest)  # written by ingest while it runs
        if feeds:
            status.ingest.SetInParent()
            for field in ("primary", "backup", "refused_backup"):
                setattr(status.ingest, field, feeds.get(field, ""))
        if epoch.representations:
            raw = await self.redis.hget(keys.position(epoch.id), epoch.representations[0].id)
            if raw is not None:
                position = Position.decode(raw)
                status.live_segment, status.live_chunk = position.segment, position.chunk

    async def _new_stream_key(self, channel_id: str) -> str:
        stream_key = new_stream_key(channel_id)
        await self.store.set_stream_key(channel_id, key_digest(stream_key))
        await issue_stream_key(self.redis, channel_id, stream_key)
        return stream_key

    async def _replay(self, request_id: str) -> dict[str, str] | None:
        if not request_id:
            return None
        raw = await self.redis.get(channel_request(request_id))
        return json.loads(raw) if raw else None

    async def _remember(self, request_id: str, result: dict[str, str]) -> None:
        if request_id:
            await self.redis.set(
                channel_request(request_id), json.dumps(result), ex=IDEMPOTENCY_TTL_S
            )

    async def create(
        self, channel_id: str, channel: pb.Channel, request_id: str = ""
    ) -> tuple[pb.Channel, str]:
        """Create a channel and its configuration record (the packager waits for it)."""
        earlier = await self._replay(request_id)
        if earlier is not None:
            return await self._load(earlier["channel"]), earlier["stream_key"]
        config = channel_config(channel_id, channel)
        created = normalised(channel_id, channel, config)
        stream_key = new_stream_key(channel_id)
        try:
            await self.store.create(channel_id, created, key_digest(stream_key))
        except ChannelExists:
            raise AlreadyExists(f"channels/{channel_id} exists", "channel_id") from None
        await put_channel_config(self.redis, config)
        await issue_stream_key(self.redis, channel_id, stream_key)
        await self._remember(request_id, {"channel": channel_id, "stream_key": stream_key})
        return await self._load(channel_id), stream_key

    @access.operator
    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateChannelResponse:
        channel_id = validate.resource_id(request.channel_id, "channel_id")
        validate.text(request.channel.display_name, "channel.display_name", 1, 100)
        channel, stream_key = await self.create(
            channel_id, request.channel, validate.request_id(request.request_id)
        )
        return pb.CreateChannelResponse(channel=channel, stream_key=stream_key)

    @access.public("live channels are listed to anyone, as titles are")
    async def GetChannel(
        self, request: pb.GetChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelResponse:
        return pb.GetChannelResponse(channel=await self._load(_channel_id(request.name)))

    @access.public("live channels are listed to anyone, as titles are")
    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChannelsResponse:
        size = validate.page_size(request.page_size, 20, 100)
        offset = validate.offset_from_token(request.page_token)
        ids = await self.store.page(offset, size + 1)
        channels = [await self._load(i) for i in ids[:size]]
        token = validate.next_offset_token(offset, size, len(ids))
        return pb.ListChannelsResponse(channels=channels, next_page_token=token)

    @access.operator
    async def EndChannel(
        self, request: pb.EndChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndChannelResponse:
        channel_id = _channel_id(request.name)
        validate.request_id(request.request_id)
        channel = await self._load(channel_id)
        channel.state = pb.CHANNEL_STATE_ENDED
        await self.store.end(channel_id, channel)
        await revoke_stream_key(self.redis, channel_id)
        await end_channel_config(self.redis, channel_id)  # ingest takes it off air
        return pb.EndChannelResponse(channel=channel)

    @access.operator
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

    @access.internal(
        "an oracle for guessing stream keys if open; ingest reads the key records itself, "
        "so only a service (or an operator checking a broadcaster's setup) asks"
    )
    async def CheckStreamKey(
        self, request: pb.CheckStreamKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckStreamKeyResponse:
        stream_key = validate.required(request.stream_key, "stream_key", max_len=200)
        channel_id = await channel_for_stream_key(self.redis, stream_key)
        if channel_id is None:
            raise NotFound("no channel has this stream key")
        return pb.CheckStreamKeyResponse(channel=f"channels/{channel_id!s}")


class ChannelService(Service):
    def __init__(
        self,
        redis_url: str,
        database_url: str,
        seed_demo: bool = True,
        demo_ladder: tuple[VideoRung, ...] = (),
        cache_ttl_s: float = CHANNEL_CACHE_S,
    ) -> None:
        self.engine = connect_database(database_url)
        self.servicer = ChannelServicer(redis_url, ChannelStore(self.engine, cache_ttl_s))
        self.mirror = RedisMirror(self.servicer.redis, self.servicer.store)
        self._mirroring: asyncio.Task[None] | None = None
        self.seed_demo = seed_demo
        self.demo_ladder = demo_ladder or DEFAULT_VIDEO_LADDER

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["ChannelService"].full_name,
                self.servicer,
                pb_grpc.add_ChannelServiceServicer_to_server,
            )
        ]

    async def start(self) -> None:
        await self.servicer.store.migrate()
        if self.seed_demo:
            with contextlib.suppress(AlreadyExists):  # made by an earlier start
                demo = pb.Channel(display_name="Livemesh Demo")
                demo.video_ladder.extend(
                    pb.VideoRung(name=r.name, width=r.width, height=r.height, bitrate=r.bitrate)
                    for r in self.demo_ladder
                )
                await self.servicer.create(DEMO_CHANNEL, demo)
        await self.mirror.ensure()  # a Redis that restarted empty before this start
        self._mirroring = asyncio.create_task(self.mirror.run(), name="channels-mirror")

    async def close(self) -> None:
        if self._mirroring is not None:
            self._mirroring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirroring
        await self.servicer.redis.aclose()
        await self.engine.dispose()


async def build(settings: ChannelsSettings, factory: RpcChannelFactory) -> Service:
    assert settings.database_url  # the process's embedded SQLite when none is set
    return ChannelService(
        settings.required_redis_url(),
        settings.database_url,
        seed_demo=settings.seed_demo,
        demo_ladder=select_rungs(settings.demo_rungs),
    )


def main(argv: list[str] | None = None) -> int:
    return service_main(ChannelsSettings, argv, build, needs_redis=True)
