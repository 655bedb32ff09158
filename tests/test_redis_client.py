"""livemesh's Redis clients: a blocking stream reader always ends when it is cancelled.

Every live-path reader is an XREAD loop, and cancelling its task is how a viewer
leaving, a test ending or a process stopping ends it.  redis-py's default socket
timeout could swallow that CancelledError and leave the loop reading forever
(see :mod:`kernel.redis_server`); these tests hold both client kinds to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis

from kernel.redis_server import redis_client, shared_client
from live.state import ChannelStore

CANCELLATIONS = 300
CANCEL_GRACE_S = 2.0  # a cancelled reader ends at its next await; this bounds a failure


@contextlib.asynccontextmanager
async def busy_events(redis: aioredis.Redis, stream: str) -> AsyncIterator[None]:
    """A writer appending to ``stream`` as fast as the server takes it, for the body."""

    async def write() -> None:
        while True:
            await redis.xadd(stream, {"e": "1", "r": "v", "n": 0, "k": 0, "l": 0}, maxlen=1000)

    writer = asyncio.create_task(write())
    try:
        yield
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def readers_that_would_not_end(redis: aioredis.Redis) -> int:
    """Cancel a reader of a busy event stream at random points; count those still running."""
    store = ChannelStore(redis, "cancel")
    stuck = 0

    async def read() -> None:
        async for _ in store.events():
            pass

    async with busy_events(redis, store.keys.events):
        for _ in range(CANCELLATIONS):
            reader = asyncio.create_task(read())
            await asyncio.sleep(random.uniform(0, 0.01))  # cancel at a random point of the loop
            reader.cancel()
            done, _ = await asyncio.wait({reader}, timeout=CANCEL_GRACE_S)
            if not done:
                stuck += 1
                await end_by_force(redis, reader)
                break  # one reader that ignored its cancel is proof enough
    return stuck


async def end_by_force(redis: aioredis.Redis, reader: asyncio.Task[None]) -> None:
    """Ends a reader that ignored its cancel: its connection is closed under it."""
    await redis.connection_pool.disconnect()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(reader, CANCEL_GRACE_S)


async def check(client: Callable[[str], aioredis.Redis], redis_url: str) -> None:
    redis = client(redis_url)
    try:
        assert await readers_that_would_not_end(redis) == 0
    finally:
        await redis.aclose()


async def test_a_cancelled_stream_reader_ends_with_the_plain_client(redis_url: str) -> None:
    await check(redis_client, redis_url)


async def test_a_cancelled_stream_reader_ends_with_the_shared_pool_client(redis_url: str) -> None:
    await check(shared_client, redis_url)
