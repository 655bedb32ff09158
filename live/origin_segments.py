"""The origin's media objects: ``init.mp4`` and ``{n}.m4s`` of an epoch's rendition, read
from the epoch's live window, whole or as one byte range (an LL-HLS part).

A segment is answered by where it stands against the live edge (:func:`segment_state`):
whole, being produced (streamed chunk by chunk, :mod:`live.origin_live_segment`), next
(held open until its first chunk exists, then streamed), or out of reach (typed errors,
see :mod:`live.http_errors`).
"""

from __future__ import annotations

import enum
import re

from aiohttp import web

from kernel import clock
from kernel.channel_config import NAME_PATTERN, ChannelConfig
from kernel.epoch import Epoch, Position, Representation
from live.http_errors import BadRequest, Gone, NotFound, TooEarly, error_response
from live.origin_archive import archived_init, archived_segment
from live.origin_context import ORIGIN, channel_name
from live.origin_live_segment import LiveSegment, media_headers
from live.state import ChannelStore
from live.timing import live_edge_segment

EPOCH_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEGMENT_NAME = re.compile(r"^(\d{1,10})\.m4s$")
INIT_NAME = "init.mp4"


class SegmentState(enum.Enum):
    """Where a segment stands against its rendition's live edge (:func:`segment_state`)."""

    COMPLETE = "complete"
    LIVE = "live"  # being produced: some chunks exist
    NEXT = "next"  # the one after the live edge: none exist yet


def segment_state(
    number: int, position: Position | None, config: ChannelConfig, due: int = -1
) -> SegmentState:
    """Where segment ``number`` stands against a rendition's live edge ``position``.

    ``due`` is the segment the wall clock says is being produced (the MPD's view, and
    so the player's): a segment up to one past it is held even when the encoder runs
    late, so a player that follows the MPD's timing is never told 404 for it.
    Raises :class:`TooEarly` beyond the next segment and :class:`Gone` behind the window.
    """
    produced = position.segment if position is not None else -1
    if position is not None:
        window_segments = config.window_s * 1000 // config.segment_ms
        if number < position.segment - window_segments:
            raise Gone("segment has left the live window")
        if position.has_complete(number):
            return SegmentState.COMPLETE
        if number == position.segment:
            return SegmentState.LIVE
    if produced < number <= max(produced, due) + 1:
        return SegmentState.NEXT
    raise TooEarly("segment not produced yet")


async def _epoch_and_rep(store: ChannelStore, request: web.Request) -> tuple[Epoch, Representation]:
    """The epoch and rendition a media URL names; 400 on malformed names, 404 on unknown."""
    epoch_id, rep_id = request.match_info["epoch"], request.match_info["rep"]
    if not EPOCH_PATTERN.match(epoch_id):
        raise BadRequest("invalid epoch id")
    if not NAME_PATTERN.match(rep_id):
        raise BadRequest("invalid rendition name")
    epoch = await store.find_epoch(epoch_id)
    if epoch is None:
        raise NotFound("unknown or expired epoch")
    rep = epoch.representation(rep_id)
    if rep is None:
        raise NotFound("unknown rendition")
    return epoch, rep


async def handle_media(request: web.Request) -> web.StreamResponse:
    """``init.mp4`` or ``{n}.m4s`` of an epoch's rendition, dispatched on the name."""
    origin = request.app[ORIGIN]
    store = origin.store(channel_name(request))
    name = request.match_info["name"]
    segment = SEGMENT_NAME.match(name)
    if name != INIT_NAME and segment is None:
        if name.endswith(".m4s"):
            raise BadRequest("segment number must be a non-negative integer")
        raise NotFound("no such object")
    epoch, rep = await _epoch_and_rep(store, request)
    if segment is None:
        data = await store.init_segment(epoch.id, rep.id)
        if data is None:
            data = await archived_init(origin.archive, store.channel, epoch.id, rep.id)
        return web.Response(body=data, headers=media_headers(rep))
    return await _serve_segment(request, store, epoch, rep, int(segment.group(1)))


async def _serve_segment(
    request: web.Request, store: ChannelStore, epoch: Epoch, rep: Representation, number: int
) -> web.StreamResponse:
    config = await store.get_config()
    if config is None:
        raise NotFound("unknown channel")
    copy = await store.segment_copy(epoch.id, rep.id, number)
    due = live_edge_segment(clock.now_ms(), epoch.start_ms, config.timeline)
    span = _byte_range(request)
    chunks: list[bytes] = copy.chunks
    try:
        state = segment_state(number, copy.position, config, due)
    except Gone:  # behind the live window: only the archive may have it (DVR)
        state, chunks = SegmentState.COMPLETE, []
    if state is SegmentState.COMPLETE:
        generation: int | None = copy.generation
        body = b"".join(chunks)
        if not body:  # expired from Redis: the archive's copy (DVR), else 410
            archive = request.app[ORIGIN].archive
            body = await archived_segment(archive, store.channel, epoch.id, rep.id, number)
            generation = None  # the archive keeps the settled copy, whichever pipeline's
        if span is not None:
            return _partial(rep, body, span, complete=True, generation=generation)
        return web.Response(body=body, headers=media_headers(rep, generation))
    if span is not None and request.method == "GET":
        segment = LiveSegment(request, store, epoch.id, rep, number, config)
        body, complete, generation = await segment.bytes_up_to(span[1])
        return _partial(rep, body, span, complete, generation)
    if state is SegmentState.NEXT:
        current = await store.current_epoch()
        if current is None or current.id != epoch.id:
            raise NotFound("epoch has ended")
    if request.method == "HEAD":  # never held: the live segment exists, the next not yet
        if state is SegmentState.NEXT:
            raise TooEarly("segment not produced yet")
        return web.Response(headers=media_headers(rep))
    segment = LiveSegment(request, store, epoch.id, rep, number, config)
    return await segment.serve()


ByteSpan = tuple[int, int]  # first and last byte, inclusive


def _byte_range(request: web.Request) -> ByteSpan | None:
    """The one ``bytes=first-last`` range asked for (an LL-HLS part), else None.

    Open-ended, suffix, multi-range and malformed headers are ignored (the whole object
    is sent, as RFC 9110 allows): an edge resuming a segment with ``bytes=N-`` skips the
    first N bytes of a whole answer itself (edge/upstream.py).  aiohttp's parser reads it.
    """
    header = request.headers.get("Range")
    if header is None or "," in header:
        return None
    try:
        asked = request.http_range
    except ValueError:
        return None
    if asked.start is None or asked.start < 0 or asked.stop is None:
        return None
    return asked.start, asked.stop - 1


def _partial(
    rep: Representation, body: bytes, span: ByteSpan, complete: bool, generation: int | None
) -> web.Response:
    """206 with bytes ``span`` of ``body`` (of copy ``generation``); a live segment's total is
    not known yet (``*``)."""
    first, last = span
    if first >= len(body):
        if complete:  # RFC 9110 §15.5.17
            reason = "range starts past the end of the segment"
            return error_response(416, reason, {"Content-Range": f"bytes */{len(body)}"})
        raise TooEarly("byte range not produced yet")
    last = min(last, len(body) - 1)
    total = str(len(body)) if complete else "*"
    headers = {**media_headers(rep, generation), "Content-Range": f"bytes {first}-{last}/{total}"}
    return web.Response(status=206, body=body[first : last + 1], headers=headers)
