"""A channel's configuration record in Redis, and waiting for it to exist.

The channels service is the record's one writer (:func:`put_channel_config`, when
a channel is created; :func:`end_channel_config`, when it is ended); the packager and
ingest read it at start (:func:`wait_for_channel_config`), so a channel runs with the
ladder and timing it was created with, whoever starts it and with whatever flags, and
ingest takes a channel off air when it ends (:func:`wait_until_ended`).  Each write also
appends to the channel's config log (a stream, in the same MULTI), so a reader
that starts first learns of the record from a blocking ``XREAD``, not a poll.
"""

from __future__ import annotations

import asyncio
from typing import cast

import redis.asyncio as aioredis

from kernel.channel_config import ChannelConfig
from kernel.keys import ChannelKeys
from kernel.redis_server import redis_client

CONFIG_LOG_LENGTH = 16  # writes kept in the log: a reader only needs to learn of the last
END_BLOCK_MS = 5_000  # longest wait of one read for a channel's end

LogReply = list[tuple[bytes | str, list[tuple[bytes | str, dict[bytes | str, bytes | str]]]]]


async def put_channel_config(redis: aioredis.Redis, config: ChannelConfig) -> None:
    """Store ``config`` as its channel's record and wake every reader waiting for it."""
    await _write(redis, config, only_if_absent=False)


async def restore_channel_config(redis: aioredis.Redis, config: ChannelConfig) -> None:
    """Put back the record a running packager read, when Redis lost it (a restart keeps
    nothing) and origins need it to describe the channel; a record present stays."""
    await _write(redis, config, only_if_absent=True)


async def _write(redis: aioredis.Redis, config: ChannelConfig, only_if_absent: bool) -> None:
    keys = ChannelKeys(config.name)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.config, config.to_json(), nx=only_if_absent)
        pipe.xadd(keys.config_log, {"w": 1}, maxlen=CONFIG_LOG_LENGTH, approximate=False)
        await pipe.execute()


async def get_channel_config(redis: aioredis.Redis, channel: str) -> ChannelConfig | None:
    """The channel's record, or None when no channel of that name was created."""
    raw = await redis.get(ChannelKeys(channel).config)
    if raw is None:
        return None
    return ChannelConfig.from_json(raw.decode() if isinstance(raw, bytes) else raw)


async def wait_for_channel_config(
    redis: aioredis.Redis, channel: str, timeout_s: float
) -> ChannelConfig:
    """The channel's record, waiting up to ``timeout_s`` for it to be written.

    Raises ``TimeoutError`` when no record appears in time.  The log is read from its
    start, so a write between the ``GET`` and the ``XREAD`` is not missed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    log_key, cursor = ChannelKeys(channel).config_log, "0-0"
    while (config := await get_channel_config(redis, channel)) is None:
        left_ms = int((deadline - loop.time()) * 1000)
        if left_ms <= 0:
            raise TimeoutError(f"channel {channel!r} has no configuration (was it created?)")
        reply = cast(LogReply, await redis.xread({log_key: cursor}, block=left_ms, count=1))
        for _stream, entries in reply:
            entry_id = entries[-1][0]
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return config


async def end_channel_config(redis: aioredis.Redis, channel: str) -> None:
    """Mark the channel ended, for good, and wake every reader of its log (ingest takes it
    off air: its slate stops encoding)."""
    keys = ChannelKeys(channel)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.ended, 1)
        pipe.xadd(keys.config_log, {"ended": 1}, maxlen=CONFIG_LOG_LENGTH, approximate=False)
        await pipe.execute()


async def channel_ended(redis: aioredis.Redis, channel: str) -> bool:
    return bool(await redis.exists(ChannelKeys(channel).ended))


async def wait_until_ended(redis: aioredis.Redis, channel: str) -> None:
    """Return once the channel is ended, however long that takes: woken by its log's
    entry (a blocking ``XREAD``, bounded so a dropped connection is noticed), the marker
    checked after every read, so an end between two reads is not missed."""
    log_key, cursor = ChannelKeys(channel).config_log, "0-0"
    while not await channel_ended(redis, channel):
        reply = cast(LogReply, await redis.xread({log_key: cursor}, block=END_BLOCK_MS))
        for _stream, entries in reply:
            entry_id = entries[-1][0]
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def create_channel_config(redis_url: str, config: ChannelConfig) -> None:
    """:func:`put_channel_config` for a synchronous starter that runs a packager without
    the channels service (a test harness, a benchmark): the record the service would write."""

    async def put() -> None:
        redis = redis_client(redis_url)
        try:
            await put_channel_config(redis, config)
        finally:
            await redis.aclose()

    asyncio.run(put())
