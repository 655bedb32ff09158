"""Live to VOD: a channel's segments copied into the object store as they are produced.

The archiver is a reader of the channel's state in Redis, like an origin: it follows the
channel's chunk events (a blocking ``XREAD``), and whenever a rendition completes a
segment it copies every complete segment it has not copied yet, with the epoch's init
segments and record first (:mod:`live.archive_title` names the objects).  The packager
never waits for it: it runs in its own process (``livemesh vod archive CHANNEL``), and a
slow store slows only the archiver.

What it copies is driven by the renditions' positions, not by counting events: a burst
of events it fell behind on costs one position read each, and a segment it never saw an
event for (the stream is capped) is still copied while it is in the live window.  At
most ``in_flight`` segments are held in memory at once, whatever the store's speed; a
segment that left the window before it could be copied is counted as lost (and the
title is the longest unbroken run, see :func:`live.archive_title.publish_event`).

An epoch ends when the channel goes off air (the packager's closing events) or when a
new epoch replaces it (an encoder restart); the archiver then copies what is left,
publishes the epoch as a title at once (its static MPD) and hands it to ``ended``
(which adds it to the catalog).  An epoch that ends while no archiver runs is
published by the operator's call (``livemesh vod publish-event``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from kernel.epoch import Position
from kernel.objectstore import ObjectExists, ObjectStore
from live.archive_title import (
    ArchivedEpoch,
    EventTitle,
    init_object,
    publish_event,
    segment_object,
)
from live.state import ChannelStore
from live.vod.publish import TitleError, record_object

log = logging.getLogger("livemesh.archive")

IN_FLIGHT = 4  # segments read from Redis and being stored at once

SEGMENTS_ARCHIVED = Counter(
    "livemesh_archive_segments", "segments copied into the object store", ["channel"]
)
SEGMENTS_LOST = Counter(
    "livemesh_archive_segments_lost",
    "segments that left the live window before they could be archived",
    ["channel"],
)

Ended = Callable[[EventTitle], Awaitable[None]]


class Archiver:
    """Archives one channel's epochs and publishes each as a title when it ends."""

    def __init__(
        self,
        live: ChannelStore,
        objects: ObjectStore,
        ended: Ended | None = None,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.live = live
        self.objects = objects
        self.ended = ended
        self.in_flight = in_flight
        self._open: dict[str, _OpenEpoch] = {}
        self._closed: set[str] = set()
        self._copied = asyncio.Condition()

    async def run(self, after: str = "0-0") -> None:
        """Follow the channel's events from ``after`` (default: the oldest kept) for ever."""
        async for event in self.live.events(after=after):
            if event.last:
                await self.segment_ended(event.epoch)

    async def segment_ended(self, epoch_id: str) -> None:
        """A rendition of ``epoch_id`` completed a segment: copy what is complete, and close
        every epoch the channel no longer runs."""
        if epoch_id in self._closed:
            return
        if epoch_id not in self._open and not await self._start(epoch_id):
            self._closed.add(epoch_id)
            return
        await self._copy_complete(self._open[epoch_id])
        current = await self.live.current_epoch()
        for open_id in list(self._open):
            if current is None or current.id != open_id:
                await self._close(self._open.pop(open_id))

    async def wait_for(self, epoch_id: str, segment: int) -> None:
        """Return once every rendition of ``epoch_id`` has segments up to ``segment`` copied
        (or the epoch was closed)."""
        async with self._copied:
            await self._copied.wait_for(lambda: self._reached(epoch_id, segment))

    def _reached(self, epoch_id: str, segment: int) -> bool:
        if epoch_id in self._closed:
            return True
        state = self._open.get(epoch_id)
        if state is None:
            return False
        reps = state.archived.epoch.representations
        return all(state.next.get(r.id, 0) > segment for r in reps)

    async def _start(self, epoch_id: str) -> bool:
        """Store the epoch's record and init segments; False when Redis no longer has it."""
        epoch = await self.live.find_epoch(epoch_id)
        config = await self.live.get_config()
        if epoch is None or config is None:
            log.warning("archive %s: epoch %s is gone from Redis", self.live.channel, epoch_id)
            return False
        archived = ArchivedEpoch(self.live.channel, epoch, config.segment_ms)
        await self.objects.put(record_object(archived.title), archived.to_json())
        for rep in epoch.representations:
            data = await self.live.init_segment(epoch_id, rep.id)
            if data is not None:
                await self.objects.put(init_object(archived.title, rep.id), data)
        window = config.window_s * 1000 // config.segment_ms
        self._open[epoch_id] = _OpenEpoch(archived, window)
        log.info("archive %s: archiving epoch %s as %s", self.live.channel, epoch_id,
                 archived.title)  # fmt: skip
        return True

    async def _copy_complete(self, state: _OpenEpoch) -> None:
        """Copy every complete segment not copied yet, ``in_flight`` at a time."""
        epoch_id = state.archived.epoch.id
        raw = await self.live.redis.hgetall(self.live.keys.position(epoch_id))
        for rep_raw, pos_raw in raw.items():
            rep = rep_raw.decode() if isinstance(rep_raw, bytes) else rep_raw
            position = Position.decode(pos_raw)
            last = position.segment if position.complete else position.segment - 1
            first = state.next.get(rep, max(0, position.segment - state.window))
            for start in range(first, last + 1, self.in_flight):
                batch = range(start, min(start + self.in_flight, last + 1))
                await asyncio.gather(*(self._copy(state, rep, n) for n in batch))
                async with self._copied:
                    state.next[rep] = batch.stop
                    self._copied.notify_all()

    async def _copy(self, state: _OpenEpoch, rep: str, number: int) -> None:
        chunks, _ = await self.live.chunks(state.archived.epoch.id, rep, number)
        channel = self.live.channel
        if not chunks:
            SEGMENTS_LOST.labels(channel).inc()
            log.warning("archive %s: %s segment %d left the window unarchived", channel, rep,
                        number)  # fmt: skip
            return
        try:
            await self.objects.put(segment_object(state.archived.title, rep, number),
                                   b"".join(chunks))  # fmt: skip
        except ObjectExists:  # a redundant pipeline replaced a segment already archived
            log.warning("archive %s: %s segment %d changed after it was archived; the "
                        "first copy is kept", channel, rep, number)  # fmt: skip
            return
        SEGMENTS_ARCHIVED.labels(channel).inc()

    async def _close(self, state: _OpenEpoch) -> None:
        """The epoch is over: copy what is left, publish it as a title, announce it."""
        await self._copy_complete(state)
        async with self._copied:
            self._closed.add(state.archived.epoch.id)
            self._copied.notify_all()
        try:
            published = await publish_event(self.objects, state.archived.title)
        except ObjectExists:
            log.warning("archive %s: %s was published before the event ended; kept as it is",
                        self.live.channel, state.archived.title)  # fmt: skip
            return
        except TitleError as error:  # nothing whole was archived: there is no title to make
            log.warning("archive %s: %s", self.live.channel, error)
            return
        log.info("archive %s: published %s (%d segments from %d)", self.live.channel,
                 published.title, published.count, published.first)  # fmt: skip
        if self.ended is None:
            return
        try:
            await self.ended(published)
        except Exception:  # the title is in the store; the operator's call can announce it
            log.exception("archive %s: announcing %s failed", self.live.channel, published.title)


class _OpenEpoch:
    """An epoch being archived: its record, and the next segment to copy per rendition."""

    def __init__(self, archived: ArchivedEpoch, window: int) -> None:
        self.archived = archived
        self.window = window  # segments in the live window: older ones are gone
        self.next: dict[str, int] = {}
