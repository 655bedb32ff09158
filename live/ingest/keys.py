"""Stream keys: which channel a broadcaster's secret publishes to.

The channels service (``livemesh.channels.v1.ChannelService``) owns the keys; it
is not written yet, so ingest depends only on the small :class:`StreamKeys`
protocol and reads the Redis records below, which the channels service is to
write (``CheckStreamKey`` answers from the same records):

==============================  =====================================================
``lm:streamkey:{sha256 hex}``   the channel id the key publishes to (no TTL)
``lm:{ch}:streamkey``           the sha256 hex of the channel's current key
==============================  =====================================================

Only digests are stored, so a dump of Redis does not leak a key; rotating
writes both records and deletes the old digest's record.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import redis.asyncio as aioredis


class StreamKeys(Protocol):
    async def channel_for(self, stream_key: str) -> str | None:
        """The channel id ``stream_key`` publishes to, or ``None`` if it is not valid."""
        ...


def key_digest(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode()).hexdigest()


class RedisStreamKeys:
    """The stream-key records in Redis, as the channels service keeps them."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def channel_for(self, stream_key: str) -> str | None:
        if not stream_key or len(stream_key) > 256:
            return None
        raw = await self.redis.get(f"lm:streamkey:{key_digest(stream_key)}")
        return _text(raw) if raw else None

    async def issue(self, channel: str, stream_key: str) -> None:
        """Make ``stream_key`` the channel's key (the old one stops working)."""
        current_key = f"lm:{{{channel}}}:streamkey"
        raw = await self.redis.get(current_key)
        old = _text(raw) if raw else None
        digest = key_digest(stream_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            if old and old != digest:
                pipe.delete(f"lm:streamkey:{old}")
            pipe.set(f"lm:streamkey:{digest}", channel)
            pipe.set(current_key, digest)
            await pipe.execute()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
