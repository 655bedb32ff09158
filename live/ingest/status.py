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
from collections.abc import Callable

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
        self._dirty.set()  # the first write: nobody connected yet
        self.written: dict[str, str] | None = None  # the status last written
        self._wrote = asyncio.Condition()
        source.on_change = self.changed
        self._task = asyncio.create_task(self._run(), name=f"ingest-status-{source.config.name}")

    def changed(self) -> None:
        """The source's feeds changed (any thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._dirty.set)

    async def wait_until(self, shown: Callable[[dict[str, str]], bool]) -> None:
        """Return once the status in Redis is one ``shown`` accepts (what an operator sees)."""
        async with self._wrote:
            await self._wrote.wait_for(lambda: self.written is not None and shown(self.written))

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            status = self.source.status()
            try:
                await self._write(status)
            except (RedisError, OSError) as exc:
                log.warning("ingest: channel %s status unwritten (%r): again", self.key, exc)
                await asyncio.sleep(RETRY_S)
                self._dirty.set()
                continue
            async with self._wrote:
                self.written = status
                self._wrote.notify_all()

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
