"""The origin's DVR: segments of the running epoch older than the live window, from the archive.

Redis holds a channel's last ``window_s`` of media; the archiver (:mod:`live.archive`)
copies every segment into the object store as it completes.  So a player seeking back
further than the window (the MPD offers ``timeShiftBufferDepth`` = the DVR depth) is
answered from the store, under the same live URL: the bytes are the same, so caches
that hold the URL stay right.  A segment the archive does not have stays ``410 Gone``.
"""

from __future__ import annotations

from kernel.objectstore import ObjectNotFound, ObjectStore
from live.archive_title import event_title, init_object, segment_object
from live.http_errors import Gone


async def archived(store: ObjectStore | None, name: str) -> bytes:
    """The archived object ``name``; :class:`Gone` when there is no archive or no object."""
    if store is None:
        raise Gone("segment has left the live window")
    try:
        return await store.get(name)
    except ObjectNotFound:
        raise Gone("segment has left the live window and is not archived") from None


async def archived_segment(
    store: ObjectStore | None, channel: str, epoch_id: str, rep: str, number: int
) -> bytes:
    return await archived(store, segment_object(event_title(channel, epoch_id), rep, number))


async def archived_init(store: ObjectStore | None, channel: str, epoch_id: str, rep: str) -> bytes:
    return await archived(store, init_object(event_title(channel, epoch_id), rep))
