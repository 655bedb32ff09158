"""Chunk wake-ups: one event-log reader per channel per process, many waiting requests.

A request streaming a live segment must learn of each new chunk within
milliseconds, without polling and without one blocking XREAD per request (a
thousand viewers would hold a thousand Redis connections). So one task per
channel reads ``ChannelStore.events()`` and sets the :class:`asyncio.Event` of
every request watching that ``(epoch, rendition, segment)``.

A waiter registers *before* it reads Redis, and the reader's cursor is taken
before any waiter registers: so no chunk published after a waiter's read can go
unannounced to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from live.state import ChannelStore

log = logging.getLogger(__name__)

SegmentKey = tuple[str, str, str, int]  # channel, epoch, rendition, segment


class SegmentWatch:
    """One request's view of a segment's wake-ups."""

    def __init__(self, fanout: ChunkFanout, channel: str, signal: asyncio.Event) -> None:
        self._fanout = fanout
        self._channel = channel
        self._signal = signal

    async def next(self, timeout_s: float) -> bool:
        """Wait for a chunk published since the last call; False when none came in time."""
        await self._fanout.ensure_reader(self._channel)  # a failed reader is restarted
        try:
            await asyncio.wait_for(self._signal.wait(), timeout_s)
        except TimeoutError:
            return False
        self._signal.clear()  # cleared before the caller re-reads, so no chunk is missed
        return True


class ChunkFanout:
    """Per-channel readers of the chunk event log that wake the segment's waiters.

    The Redis client must let a read block for ``block_ms`` (no shorter ``socket_timeout``).
    """

    def __init__(self, redis: aioredis.Redis, *, block_ms: int = 5000) -> None:
        self._redis = redis
        self._block_ms = block_ms
        self._readers: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._waiters: dict[SegmentKey, set[asyncio.Event]] = {}

    @property
    def waiting(self) -> int:
        """How many requests are watching a segment now."""
        return sum(len(events) for events in self._waiters.values())

    @contextlib.asynccontextmanager
    async def watch(
        self, channel: str, epoch: str, rep: str, segment: int
    ) -> AsyncIterator[SegmentWatch]:
        """Register interest in a segment's chunks; read Redis only after entering."""
        await self.ensure_reader(channel)
        key = (channel, epoch, rep, segment)
        signal = asyncio.Event()
        self._waiters.setdefault(key, set()).add(signal)
        try:
            yield SegmentWatch(self, channel, signal)
        finally:
            events = self._waiters[key]
            events.discard(signal)
            if not events:
                del self._waiters[key]

    async def ensure_reader(self, channel: str) -> None:
        """Start the channel's reader unless it runs; return once its cursor is taken."""
        entry = self._readers.get(channel)
        if entry is not None and entry[1].is_set() and not entry[0].done():
            return
        if entry is None or entry[0].done():
            ready = asyncio.Event()
            task = asyncio.create_task(self._read(channel, ready), name=f"fanout:{channel}")
            entry = self._readers[channel] = (task, ready)
        task, ready = entry
        ready_wait = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({ready_wait, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready_wait.cancel()
        if not ready.is_set():
            raise aioredis.ConnectionError(f"no chunk event reader for channel {channel!r}")

    async def _read(self, channel: str, ready: asyncio.Event) -> None:
        store = ChannelStore(self._redis, channel)
        try:
            cursor = await store.last_event_id()
            ready.set()
            async for event in store.events(after=cursor, block_ms=self._block_ms):
                for signal in self._waiters.get(
                    (channel, event.epoch, event.rep, event.segment), ()
                ):
                    signal.set()
        except Exception:
            log.exception("chunk event reader of channel %s failed", channel)
        finally:
            # Waiters re-read Redis and, if they still need to wait, start a new reader.
            for key, events in self._waiters.items():
                if key[0] == channel:
                    for signal in events:
                        signal.set()

    async def close(self) -> None:
        """Stop every reader (app cleanup)."""
        tasks = [task for task, _ready in self._readers.values()]
        self._readers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
