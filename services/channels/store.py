"""The channels service's records in the relational database (:mod:`kernel.db`).

A channel's record and the digest of its stream key must outlive Redis: a broadcaster's
key or a created channel lost with a Redis restart would stop a live event. The database
holds them; Redis holds copies the data plane reads (the configuration record the
packager runs, the digest ingest checks), written from here (:mod:`.mirror`).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from kernel.db import Migration, database_down, migrate, record_cache_ttl
from kernel.rpc.cache import ReadThroughCache
from livemesh.channels.v1 import channels_pb2 as pb

COMPONENT = "channels"
CHANNEL_CACHE_S = 2.0  # another instance's EndChannel is seen within this

MIGRATIONS = (
    Migration(
        1,
        "channels and their stream keys",
        (
            """CREATE TABLE channels (
                id VARCHAR(63) PRIMARY KEY,
                record TEXT NOT NULL,
                ended BOOLEAN NOT NULL DEFAULT FALSE,
                create_ns BIGINT NOT NULL
            )""",
            """CREATE TABLE channel_stream_keys (
                channel_id VARCHAR(63) PRIMARY KEY REFERENCES channels (id),
                digest CHAR(64) NOT NULL UNIQUE
            )""",
        ),
    ),
)

channels = sa.table(
    "channels",
    sa.column("id", sa.String),
    sa.column("record", sa.String),
    sa.column("ended", sa.Boolean),
    sa.column("create_ns", sa.BigInteger),
)
stream_keys = sa.table(
    "channel_stream_keys", sa.column("channel_id", sa.String), sa.column("digest", sa.String)
)


class ChannelExists(Exception):
    """A channel of that id was created before."""


def _record(channel: pb.Channel) -> str:
    stored = pb.Channel()
    stored.CopyFrom(channel)
    stored.ClearField("live_status")  # read from the live state, never stored
    return json_format.MessageToJson(stored, indent=None)


class ChannelStore:
    """Channel records and current stream-key digests; a channel is read through a short
    cache that answers its last record while the database is down (press play goes on)."""

    def __init__(self, engine: AsyncEngine, cache_ttl_s: float = CHANNEL_CACHE_S) -> None:
        self.engine = engine
        self._cache: ReadThroughCache[pb.Channel | None] = ReadThroughCache(
            record_cache_ttl(cache_ttl_s), stale_if=database_down
        )

    async def migrate(self) -> None:
        await migrate(self.engine, COMPONENT, MIGRATIONS)

    async def create(self, channel_id: str, channel: pb.Channel, digest: str) -> None:
        """Store a new channel and its key's digest in one transaction.
        Raises :class:`ChannelExists`."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.insert(channels).values(
                        id=channel_id,
                        record=_record(channel),
                        ended=channel.state == pb.CHANNEL_STATE_ENDED,
                        create_ns=time.time_ns(),
                    )
                )
                await conn.execute(
                    sa.insert(stream_keys).values(channel_id=channel_id, digest=digest)
                )
        except IntegrityError:
            raise ChannelExists(channel_id) from None
        finally:
            self._cache.invalidate(channel_id)

    async def get(self, channel_id: str) -> pb.Channel | None:
        """A copy of the stored channel (no live status), None if there is none."""
        cached = await self._cache.get(channel_id, lambda: self._load(channel_id))
        if cached is None:
            return None
        channel = pb.Channel()
        channel.CopyFrom(cached)
        return channel

    async def _load(self, channel_id: str) -> pb.Channel | None:
        async with self.engine.connect() as conn:
            raw = await conn.scalar(sa.select(channels.c.record).where(channels.c.id == channel_id))
        return None if raw is None else json_format.Parse(raw, pb.Channel())

    async def end(self, channel_id: str, channel: pb.Channel) -> None:
        """Mark the channel ended and forget its stream key, in one transaction."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.update(channels)
                    .where(channels.c.id == channel_id)
                    .values(record=_record(channel), ended=True)
                )
                await conn.execute(
                    sa.delete(stream_keys).where(stream_keys.c.channel_id == channel_id)
                )
        finally:
            self._cache.invalidate(channel_id)

    async def set_stream_key(self, channel_id: str, digest: str) -> None:
        """Make ``digest`` the channel's current key (the one it replaces stops working)."""
        async with self.engine.begin() as conn:
            updated = await conn.execute(
                sa.update(stream_keys)
                .where(stream_keys.c.channel_id == channel_id)
                .values(digest=digest)
            )
            if not updated.rowcount:
                await conn.execute(
                    sa.insert(stream_keys).values(channel_id=channel_id, digest=digest)
                )

    async def page(self, offset: int, size: int) -> list[str]:
        """Channel ids in creation order, ``size`` of them from ``offset``."""
        async with self.engine.connect() as conn:
            ids = await conn.scalars(
                sa.select(channels.c.id)
                .order_by(channels.c.create_ns, channels.c.id)
                .offset(offset)
                .limit(size)
            )
            return list(ids)

    async def running(self) -> list[tuple[pb.Channel, str]]:
        """Every channel not ended, with its current key's digest: what Redis must hold."""
        query = sa.select(channels.c.record, stream_keys.c.digest).join(
            stream_keys, stream_keys.c.channel_id == channels.c.id
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(query.where(channels.c.ended.is_(False)))
            return [(json_format.Parse(record, pb.Channel()), digest) for record, digest in rows]
