"""The channel's ingest status in Redis, for operators: which feeds are connected, and
why the last backup feed was refused (``lm:{ch}:ingest``, read by the channels service's
``GetChannel`` into ``LiveStatus.ingest``).

Feeds change on any thread (an RTMP decode thread cuts a backup that disagrees), so a
change only wakes the writer; it writes the whole status from the event loop, and
changes that come while it writes are coalesced into the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kernel.keys import ChannelKeys
from live.ingest.ingest_source import IngestSource

log = logging.getLogger("livemesh.ingest")
RETRY_S = 1.0  # between writes while Redis is away


class IngestStatusWriter:
    """Keeps ``lm:{ch}:ingest`` equal to :meth:`IngestSource.status` while on air."""

    def __init__(self, redis: aioredis.Redis, source: IngestSource) -> None:
        self.redis, self.source = redis, source
        self.key = ChannelKeys(source.config.name).ingest
        self.loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._changes = 1  # the first write: nobody connected yet
        self._dirty.set()
        self._caught_up = asyncio.Event()  # every change so far is written
        source.on_change = self.changed
        self._task = asyncio.create_task(self._run(), name=f"ingest-status-{source.config.name}")

    def changed(self) -> None:
        """The source's feeds changed (any thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._mark)

    def _mark(self) -> None:
        self._changes += 1
        self._caught_up.clear()
        self._dirty.set()

    async def flushed(self) -> None:
        """Return once every change seen so far is in Redis."""
        await self._caught_up.wait()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            upto = self._changes
            try:
                await self._write(self.source.status())
            except (RedisError, OSError) as exc:
                log.warning("ingest: channel %s status unwritten (%r): again", self.key, exc)
                await asyncio.sleep(RETRY_S)
                self._dirty.set()
                continue
            if upto == self._changes:
                self._caught_up.set()

    async def _write(self, status: dict[str, str]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            if status:
                pipe.hset(self.key, items=[part for pair in status.items() for part in pair])
            await pipe.execute()

    async def close(self) -> None:
        """Off air: stop writing, and take the status away (no feed is taken any more)."""
        self.source.on_change = None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key)
