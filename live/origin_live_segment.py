"""A request for a segment still being produced: held until its first chunk exists, then
relayed chunk by chunk as the encoder publishes them (HTTP/1.1 chunked transfer).

New chunks are learnt of through :class:`live.fanout.ChunkFanout` (one event-log reader
per channel, not one per request).  Nothing here waits without a bound: a stalled encoder
ends a held request with 503 and cuts a streaming one after two segment durations without
a chunk.  The media headers live here, the lowest of the origin's segment modules, since
a relayed segment carries them as a whole one does.
"""

from __future__ import annotations

import logging

from aiohttp import web
from redis.exceptions import RedisError

from kernel.channel_config import ChannelConfig
from kernel.epoch import Representation
from live.fanout import SegmentWatch
from live.http_errors import HoldExpired
from live.origin_context import ORIGIN
from live.state import ChannelStore
from live.timing import HOLD_SEGMENTS

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"


def media_headers(rep: Representation, generation: int | None = None) -> dict[str, str]:
    """A media object's headers; a segment's carry the ETag of the copy they come from."""
    headers = {"Content-Type": f"{rep.kind}/mp4", "Cache-Control": IMMUTABLE}
    if generation is not None:
        headers["ETag"] = copy_tag(generation)
    return headers


def copy_tag(generation: int) -> str:
    """The strong ETag of one served copy of a segment (:meth:`ChannelStore.generation`).

    Byte-identical copies from either redundant pipeline share it (a switch between them
    changes no byte); a replaced segment's new copy has another, so a cache that resumes
    a body with ``If-Range`` never splices two encodes (edge/upstream.py).
    """
    return f'"g{generation}"'


class LiveSegment:
    """One request for a segment still being produced: hold, then relay chunk by chunk."""

    def __init__(
        self,
        request: web.Request,
        store: ChannelStore,
        epoch_id: str,
        rep: Representation,
        number: int,
        config: ChannelConfig,
    ) -> None:
        self.request = request
        self.store = store
        self.epoch_id = epoch_id
        self.rep = rep
        self.number = number
        self.stall_s = HOLD_SEGMENTS * config.segment_ms / 1000
        self.origin = request.app[ORIGIN]
        # the copy this response sends (:meth:`ChannelStore.generation`), from its first bytes
        self.generation: int | None = None

    async def serve(self) -> web.StreamResponse:
        metrics = self.origin.metrics
        fanout = self.origin.fanout
        async with fanout.watch(self.store.channel, self.epoch_id, self.rep.id, self.number) as w:
            with metrics.held.track_inprogress():
                chunks, complete = await self._next_chunks(w, 0)
            if not chunks and not complete:
                raise HoldExpired("segment not produced in time")
            if complete:  # it finished before we started: chunks 0.. are all of it
                headers = media_headers(self.rep, self.generation)
                return web.Response(body=b"".join(chunks), headers=headers)
            with metrics.streaming.track_inprogress():
                return await self._relay(w, chunks)

    async def bytes_up_to(self, last: int) -> tuple[bytes, bool, int]:
        """The segment's bytes once byte ``last`` exists (or it is complete), whether it is,
        and the generation of the copy they are from.

        A part is listed in a playlist only once it is stored, so this rarely waits.
        """
        fanout = self.origin.fanout
        async with fanout.watch(self.store.channel, self.epoch_id, self.rep.id, self.number) as w:
            with self.origin.metrics.held.track_inprogress():
                while True:
                    copy = await self.store.segment_copy(self.epoch_id, self.rep.id, self.number)
                    body = b"".join(copy.chunks)
                    position = copy.position
                    complete = position is not None and position.has_complete(self.number)
                    if len(body) > last or complete:
                        return body, complete, copy.generation
                    if not await w.next(self.stall_s):
                        raise HoldExpired("byte range not produced in time")

    async def _next_chunks(self, watch: SegmentWatch, first: int) -> tuple[list[bytes], bool]:
        """Chunks ``first..`` once some exist or the segment is complete; ``[]`` on a stall."""
        while True:
            copy = await self.store.segment_copy(self.epoch_id, self.rep.id, self.number, first)
            position, chunks = copy.position, copy.chunks
            complete = position is not None and position.has_complete(self.number)
            if self.generation is not None and copy.generation != self.generation:
                # the segment was replaced (a failed redundant pipeline's, by the other's,
                # :mod:`live.pipelines`): cut, the client asks again and gets the new copy whole
                return [], False
            if chunks or complete:
                self.generation = copy.generation
                return chunks, complete
            if not await watch.next(self.stall_s):
                return [], False

    async def _relay(self, watch: SegmentWatch, chunks: list[bytes]) -> web.StreamResponse:
        """Write each chunk as soon as it exists; HTTP/1.1 frames them with chunked transfer."""
        response = web.StreamResponse(headers=media_headers(self.rep, self.generation))
        await response.prepare(self.request)
        sent, complete = 0, False
        try:
            while True:
                for chunk in chunks:
                    await response.write(chunk)
                    self.origin.metrics.bytes_out.inc(len(chunk))
                sent += len(chunks)
                if complete:
                    break
                chunks, complete = await self._next_chunks(watch, sent)
                if not chunks and not complete:
                    log.warning("segment %s/%s/%d stalled", self.epoch_id, self.rep.id, self.number)
                    self._cut()
                    return response
            await response.write_eof()
        except ConnectionError:
            log.debug("client left during segment %d", self.number)
        except RedisError:
            log.exception("manifest state lost during segment %d", self.number)
            self._cut()
        return response

    def _cut(self) -> None:
        """End a broken stream by closing the connection, not the chunked body.

        A clean end of the body would pass a truncated segment off as a whole one,
        and caches keep segments for a year.
        """
        if self.request.transport is not None:
            self.request.transport.abort()
