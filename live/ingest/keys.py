"""Stream keys: which channel a broadcaster's secret publishes to.

The channels service (``services/channels``) owns the keys.  Ingest depends
only on the small :class:`StreamKeys` protocol; :class:`RedisStreamKeys` reads
the records the channels service writes (its ``CheckStreamKey`` answers from
the same hash), so a key check costs one Redis round trip and no gRPC hop on
the ingest path, and ingest keeps working through a control-plane outage:

=============================  ================================================
``lm:streamkeys``              hash SHA-256(stream key) -> channel id
``lm:{ch}:streamkey``          SHA-256 of the channel's current stream key
=============================  ================================================

Only digests are stored, so a dump of Redis does not leak a key.  Ending a
channel or rotating its key removes the old digest, so it stops working.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import redis.asyncio as aioredis

STREAM_KEYS = "lm:streamkeys"


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
        raw = await self.redis.hget(STREAM_KEYS, key_digest(stream_key))
        return _text(raw) if raw else None

    async def issue(self, channel: str, stream_key: str) -> None:
        """Make ``stream_key`` the channel's key, as the channels service does (dev and tests)."""
        current_key = f"lm:{{{channel}}}:streamkey"
        raw = await self.redis.get(current_key)
        old = _text(raw) if raw else None
        digest = key_digest(stream_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            if old and old != digest:
                pipe.hdel(STREAM_KEYS, old)
            pipe.hset(STREAM_KEYS, digest, channel)
            pipe.set(current_key, digest)
            await pipe.execute()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
