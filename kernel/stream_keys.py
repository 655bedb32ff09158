"""Stream keys: the secret a broadcaster publishes with, and the channel it names.

The channels service issues, rotates and revokes keys; ingest looks them up (one
Redis round trip, no gRPC hop, so ingest keeps working through a control-plane
outage).  Only a digest is stored: a dump of Redis does not leak a key.  A key is
256 random bits, so one SHA-256 is enough (a slow password KDF guards guessable
secrets, not these), and a lookup by digest compares nothing byte by byte.
"""

from __future__ import annotations

import hashlib
import secrets

import redis.asyncio as aioredis

from kernel.keys import STREAM_KEYS, ChannelKeys

KEY_BYTES = 32  # 256 random bits
MAX_KEY_LENGTH = 256  # longer input is no key of ours: refused before hashing


def new_stream_key(channel: str) -> str:
    """A fresh key for ``channel``; the prefix only helps a human tell keys apart."""
    return f"lmsk_{channel}_{secrets.token_urlsafe(KEY_BYTES)}"


def key_digest(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode()).hexdigest()


async def issue_stream_key(redis: aioredis.Redis, channel: str, stream_key: str) -> None:
    """Make ``stream_key`` the channel's key; the one it replaces stops working."""
    await publish_stream_key_digest(redis, channel, key_digest(stream_key))


async def publish_stream_key_digest(redis: aioredis.Redis, channel: str, digest: str) -> None:
    """Make the key of ``digest`` the channel's (the channels service also puts back what
    its database holds when Redis lost it); the one it replaces stops working.

    The index of all keys and the channel's record of its own key are in different Redis
    Cluster slots, so no one transaction holds both. The three writes go in the order
    that fails closed: the old key leaves the index, the channel's record names the new
    one, the new one enters the index. Stopped between two of them, the channel has no
    working key (never the old one, never a second one the record does not name), and
    issuing a key again starts from the record as it is.
    """
    current_key = ChannelKeys(channel).stream_key
    old = _text(await redis.get(current_key))
    if old and old != digest:
        await redis.hdel(STREAM_KEYS, old)
    await redis.set(current_key, digest)
    await redis.hset(STREAM_KEYS, digest, channel)


async def revoke_stream_key(redis: aioredis.Redis, channel: str) -> None:
    """The channel's current key stops working (the channel ended)."""
    old = _text(await redis.get(ChannelKeys(channel).stream_key))
    if old:
        await redis.hdel(STREAM_KEYS, old)


async def channel_for_stream_key(redis: aioredis.Redis, stream_key: str) -> str | None:
    """The channel id ``stream_key`` publishes to, or None if it is no valid key."""
    if not stream_key or len(stream_key) > MAX_KEY_LENGTH:
        return None
    return _text(await redis.hget(STREAM_KEYS, key_digest(stream_key)))


def _text(raw: bytes | str | None) -> str | None:
    """A reply as text: the client may or may not be set to decode responses."""
    return raw.decode() if isinstance(raw, bytes) else raw
