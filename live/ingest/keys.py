"""Stream keys: which channel a broadcaster's secret publishes to.

The channels service (``services/channels``) owns the keys.  Ingest depends
only on the small :class:`StreamKeys` protocol; :class:`RedisStreamKeys` reads
the records the channels service writes (:mod:`kernel.stream_keys`), so a key
check costs one Redis round trip and no gRPC hop on the ingest path.
"""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis

from kernel.stream_keys import channel_for_stream_key, issue_stream_key


class StreamKeys(Protocol):
    async def channel_for(self, stream_key: str) -> str | None:
        """The channel id ``stream_key`` publishes to, or ``None`` if it is not valid."""
        ...


class RedisStreamKeys:
    """The stream-key records in Redis, as the channels service keeps them."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def channel_for(self, stream_key: str) -> str | None:
        return await channel_for_stream_key(self.redis, stream_key)

    async def issue(self, channel: str, stream_key: str) -> None:
        """Make ``stream_key`` the channel's key, as the channels service does (dev and tests)."""
        await issue_stream_key(self.redis, channel, stream_key)
