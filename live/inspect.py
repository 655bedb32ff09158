"""A packager's look at its own output: is this chunk what the timeline says it must be?

Each redundant pipeline inspects every chunk it made before publishing it, and records
what it found beside it (:mod:`live.pipelines`), so the origin can serve the other
pipeline's copy of a segment instead of a broken one. A chunk is defective when its
boxes do not parse, when it carries fewer or more access units than its span of the
timeline (frames skipped by a late encoder), when its durations do not add up to that
span, when its ``tfdt`` is not where the previous chunk ended, or, for the first chunk
of a segment, when it does not start with a keyframe that decodes.
"""

from __future__ import annotations

import io

import av

from kernel.isobmff import find_boxes, iter_boxes
from live.cmaf import read_sample_durations, read_tfdt

SAMPLE_IS_NON_SYNC = 0x00010000  # sample_is_non_sync_sample in a trun entry's flags


def chunk_defect(
    data: bytes,
    units: range,
    unit_duration: int,
    first_of_segment: bool,
    init: bytes | None = None,
) -> str | None:
    """Why ``data`` is not the chunk carrying access units ``units``; None when it is.

    ``init`` (a video rendition's init segment) asks for the first chunk of a segment
    to be decoded too: the one chunk a player cannot do without.
    """
    try:
        kinds = [b.type for b in iter_boxes(data)]
        if kinds.count(b"moof") != 1 or kinds.count(b"mdat") != 1:
            return f"boxes {b' '.join(kinds).decode(errors='replace')}: not one moof and mdat"
        if (kinds[0] == b"styp") != first_of_segment:
            return "styp where no segment starts" if kinds[0] == b"styp" else "styp missing"
        durations = read_sample_durations(data)
        base = read_tfdt(data)
    except (ValueError, IndexError) as exc:
        return f"unreadable: {exc}"
    if len(durations) != len(units):
        return f"{len(durations)} access units, {len(units)} due"
    if base != units.start * unit_duration:
        return f"tfdt {base}, {units.start * unit_duration} due"
    if sum(durations) != len(units) * unit_duration:
        return f"durations add up to {sum(durations)}, {len(units) * unit_duration} due"
    if first_of_segment and not _starts_with_sync(data):
        return "segment does not start with a sync sample"
    if first_of_segment and init is not None and not _decodes(init + data):
        return "first chunk of the segment does not decode"
    return None


def _starts_with_sync(data: bytes) -> bool:
    trun = find_boxes(data, [b"moof", b"traf", b"trun"])[0]
    first_flags = int.from_bytes(data[trun.payload_start + 20 : trun.payload_start + 24], "big")
    return not first_flags & SAMPLE_IS_NON_SYNC


def _decodes(media: bytes) -> bool:
    """Whether FFmpeg decodes a picture from ``media`` (init + chunk)."""
    try:
        with av.open(io.BytesIO(media), "r", format="mp4") as container:
            return next(container.decode(video=0), None) is not None
    except (av.FFmpegError, StopIteration):
        return False
