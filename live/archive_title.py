"""An archived live event as a VOD title: where its objects live, and its static MPD.

An epoch's media is archived where a title's media lives (``vod/{title}/``, the title
being :func:`event_title` of its channel and epoch), named as ``livemesh vod add`` names
a title's objects (``init-{rep}.mp4``, ``{rep}-{n}.m4s``).  So the archive *is* the
title in the making: the VOD origin serves a title only once its manifest is there
(:mod:`live.vod_origin`), and :func:`publish_event` makes it one by writing that
manifest, at once, over the segments already stored.  No object is copied twice.

The manifest is a ``type="static"`` MPD over the longest unbroken run of segments that
every rendition has (a segment lost while the store was unreachable for longer than the
live window would otherwise be a hole a player stalls in).  Segment ``n`` of the epoch
starts at media time ``n·D`` (DESIGN.md §3), so the template's ``presentationTimeOffset``
makes the run's first segment the title's time 0.  It is a pure function of what is
stored, so publishing twice writes the same bytes (a no-op in an immutable store).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from kernel.epoch import Epoch
from kernel.objectstore import ObjectStore
from live.mpd import (
    adaptation_element,
    duration,
    mpd_element,
    mpd_root,
    representation_element,
    write_mpd,
)
from live.vod.package import MANIFEST
from live.vod.publish import TitleError, record_object, title_prefix

SEGMENT_OBJECT = re.compile(r"^(?P<rep>[A-Za-z0-9_-]+)-(?P<n>\d+)\.m4s$")
TITLE_ID_MAX = 63  # kernel.channel_config.NAME_PATTERN


def event_title(channel: str, epoch_id: str) -> str:
    """The title id of a channel's epoch: readable, and unique per channel and epoch.

    A channel name too long to fit beside the epoch id is shortened and a digest of it
    added, so two long names sharing a prefix stay two titles."""
    title = f"{channel}-{epoch_id}"
    if len(title) <= TITLE_ID_MAX:
        return title
    digest = hashlib.sha256(channel.encode()).hexdigest()[:8]
    return f"{channel[: TITLE_ID_MAX - len(epoch_id) - 10]}-{digest}-{epoch_id}"


def init_object(title: str, rep: str) -> str:
    return f"{title_prefix(title)}/init-{rep}.mp4"


def segment_object(title: str, rep: str, number: int) -> str:
    return f"{title_prefix(title)}/{rep}-{number}.m4s"


@dataclass(frozen=True)
class ArchivedEpoch:
    """What the archive keeps of an epoch beside its media, to write its MPD at any time
    (the epoch's record in Redis expires with the live window)."""

    channel: str
    epoch: Epoch
    segment_ms: int

    @property
    def title(self) -> str:
        return event_title(self.channel, self.epoch.id)

    def to_json(self) -> bytes:
        record = {"channel": self.channel, "segment_ms": self.segment_ms}
        return json.dumps({**record, "epoch": json.loads(self.epoch.to_json())}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ArchivedEpoch:
        record = json.loads(raw)
        epoch = Epoch.from_json(json.dumps(record["epoch"]))
        return cls(record["channel"], epoch, int(record["segment_ms"]))


@dataclass(frozen=True)
class EventTitle:
    """A published event: its title id and the run of segments its MPD offers."""

    title: str
    archived: ArchivedEpoch
    first: int
    count: int

    @property
    def seconds(self) -> float:
        return self.count * self.archived.segment_ms / 1000


def longest_run(numbers: set[int]) -> tuple[int, int]:
    """``(first, count)`` of the longest run of consecutive numbers (the earliest of equals)."""
    best = (0, 0)
    for n in sorted(numbers):
        if n - 1 in numbers:
            continue
        length = 1
        while n + length in numbers:
            length += 1
        if length > best[1]:
            best = (n, length)
    return best


def _timescale(archived: ArchivedEpoch, kind: str) -> int:
    """The renditions' common timescale when D is whole in it, else milliseconds."""
    scales = {r.timescale for r in archived.epoch.representations if r.kind == kind}
    if len(scales) == 1:
        (scale,) = scales
        if scale > 0 and (archived.segment_ms * scale) % 1000 == 0:
            return scale
    return 1000


def event_mpd(archived: ArchivedEpoch, first: int, count: int) -> str:
    """The static MPD of segments ``first .. first + count - 1`` of an archived epoch."""
    span_ms = count * archived.segment_ms
    mpd = mpd_root(
        {
            "type": "static",
            "mediaPresentationDuration": duration(span_ms),
            "minBufferTime": duration(archived.segment_ms),
            "maxSegmentDuration": duration(archived.segment_ms),
        }
    )
    period = mpd_element(mpd, "Period", id=archived.epoch.id, start="PT0S")
    for set_id, kind in enumerate(("video", "audio"), start=1):
        reps = [r for r in archived.epoch.representations if r.kind == kind]
        if not reps:
            continue
        adaptation = adaptation_element(period, set_id, kind, reps)
        scale = _timescale(archived, kind)
        mpd_element(
            adaptation,
            "SegmentTemplate",
            timescale=scale,
            duration=archived.segment_ms * scale // 1000,
            startNumber=first,
            presentationTimeOffset=first * archived.segment_ms * scale // 1000,
            media="$RepresentationID$-$Number$.m4s",
            initialization="init-$RepresentationID$.mp4",
        )
        for rep in reps:
            representation_element(adaptation, rep)
    return write_mpd(mpd)


async def read_record(store: ObjectStore, title: str) -> ArchivedEpoch | None:
    if await store.size(record_object(title)) is None:
        return None
    return ArchivedEpoch.from_json(await store.get(record_object(title)))


async def publish_event(store: ObjectStore, title: str) -> EventTitle:
    """Make an archived epoch a title now: its MPD over the segments stored so far.

    :class:`TitleError` when there is no such archive or no segment every rendition has;
    :class:`kernel.objectstore.ObjectExists` when the title was already published with
    other segments (an operator published an event before it ended)."""
    archived = await read_record(store, title)
    if archived is None:
        raise TitleError(f"no archived event {title!r}")
    stored: dict[str, set[int]] = {r.id: set() for r in archived.epoch.representations}
    for name in await store.names(title_prefix(title)):
        found = SEGMENT_OBJECT.match(name.rsplit("/", 1)[1])
        if found and found["rep"] in stored:
            stored[found["rep"]].add(int(found["n"]))
    first, count = longest_run(set.intersection(*stored.values()) if stored else set())
    if count == 0:
        raise TitleError(f"archived event {title!r} has no segment of every rendition")
    text = event_mpd(archived, first, count)
    await store.put(f"{title_prefix(title)}/{MANIFEST}", text.encode())
    return EventTitle(title, archived, first, count)
