"""The ISO-BMFF box walker: boxes in a complete byte string, and CMAF chunks in a stream.

A box is a 32-bit size and a four-character type, then its payload; size 1 means a
64-bit size follows the type, size 0 (only in a complete string) means "to the end".
Two ways of walking the same layout, for two kinds of reader:

- :func:`iter_boxes` / :func:`find_boxes` over bytes held whole (the packager's own
  fragments, init segments, the tests), yielding :class:`Box` positions, nested at will;
- :class:`ChunkScanner` over a body as it arrives (the load rig's virtual players, the
  benches' viewers): top-level boxes only, followed by byte offsets so that a read inside
  a payload costs one comparison, reporting each CMAF chunk (``[prft] moof mdat``).

``prft`` (producer reference time) is read here too: the one box a stream reader decodes,
to tell how long a chunk took from its capture to its arrival.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

NTP_EPOCH_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
MAX_PRFT_BYTES = 64  # a prft box is 28 or 32 bytes; the one box a scanner keeps whole
_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")


@dataclass(frozen=True)
class Box:
    """One box as found in a byte string: its type and where its payload lies."""

    type: bytes
    start: int  # offset of the box header
    end: int  # offset just past the box
    payload_start: int

    def payload(self, data: bytes) -> bytes:
        return data[self.payload_start : self.end]


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid one after another in ``data[start:end]``."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = _HEADER.unpack_from(data, offset)
        header = 8
        if size == 1:
            (size,) = _LARGE_SIZE.unpack_from(data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise ValueError(f"truncated or corrupt box {kind!r} at offset {offset}")
        yield Box(kind, offset, offset + size, offset + header)
        offset += size


def find_boxes(
    data: bytes, path: Sequence[bytes], start: int = 0, end: int | None = None
) -> list[Box]:
    """Every box reached by following ``path`` (e.g. ``[b"moov", b"trak", b"tkhd"]``)."""
    found = [b for b in iter_boxes(data, start, end) if b.type == path[0]]
    if len(path) == 1:
        return found
    return [
        inner for box in found for inner in find_boxes(data, path[1:], box.payload_start, box.end)
    ]


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return _HEADER.pack(8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def read_prft_wallclock_ms(data: bytes, start: int = 0) -> int:
    """The wall-clock time (UTC ms) carried by the first ``prft`` at or after ``start``."""
    found = next(b for b in iter_boxes(data, start) if b.type == b"prft")
    ntp: int = struct.unpack_from(">Q", data, found.payload_start + 8)[0]
    seconds = (ntp >> 32) - NTP_EPOCH_OFFSET_S
    millis = ((ntp & 0xFFFFFFFF) * 1000 + (1 << 31)) >> 32
    return seconds * 1000 + millis


# (ordinal in the segment, bytes of the chunk, seconds from its first to last byte, the
# chunk's prft box or b"": decoded by the callback only when it uses it)
ChunkCallback = Callable[[int, int, float, bytes], None]


class ChunkScanner:
    """Follows top-level ISO-BMFF boxes across reads; reports each completed CMAF chunk.

    A chunk is ``[prft] moof mdat``; when its ``mdat`` ends, ``on_chunk(ordinal, nbytes,
    burst_s, prft)`` is called.  Positions are kept as offsets into the body, so a read
    that lies inside a box's payload (most of an ``mdat``) costs one comparison; only an
    incomplete box header, or an incomplete ``prft`` box (32 bytes), is carried over to
    the next read.  The header is decoded inline rather than through :func:`iter_boxes`:
    this runs for every chunk of every simulated viewer, and a generator and a
    :class:`Box` per box would be allocations on that path.
    """

    __slots__ = (
        "chunk_at",
        "chunk_open",
        "chunk_start",
        "count",
        "in_mdat",
        "next_box",
        "offset",
        "on_chunk",
        "pending",
        "prft",
    )

    def __init__(self, on_chunk: ChunkCallback) -> None:
        self.on_chunk = on_chunk
        self.offset = 0  # body bytes fed so far
        self.next_box = 0  # body offset of the next box header
        self.pending = b""  # the unfinished header (or prft box) at the end of the last read
        self.in_mdat = False  # the box ending at next_box is an mdat: its end ends a chunk
        self.chunk_open = False
        self.chunk_at = 0  # body offset where the current chunk began
        self.chunk_start = 0.0  # when its first box header arrived
        self.prft = b""
        self.count = 0

    def feed(self, data: bytes, now: float) -> None:
        offset = self.offset + len(data)
        self.offset = offset
        next_box = self.next_box
        if next_box > offset:
            return  # inside a payload
        start = offset - len(data) - len(self.pending)  # body offset of data[0]
        if self.pending:
            data, self.pending = self.pending + data, b""
        end = len(data)
        while next_box <= offset:
            if self.in_mdat:
                self.in_mdat = False
                self._chunk_done(next_box, now)
            pos = next_box - start
            if end - pos < 8:
                self.pending = data[pos:]
                break
            size, kind = _HEADER.unpack_from(data, pos)
            header = 8
            if size == 1:
                if end - pos < 16:
                    self.pending = data[pos:]
                    break
                (size,) = _LARGE_SIZE.unpack_from(data, pos + 8)
                header = 16
            if size < header:
                raise ValueError(f"box {kind!r} of size {size} at body offset {next_box}")
            if kind == b"mdat":
                self.in_mdat = True
            elif kind == b"prft":
                if size > MAX_PRFT_BYTES:
                    raise ValueError(f"prft box of {size} bytes at body offset {next_box}")
                if end - pos < size:
                    self.pending = data[pos:]
                    break
                self.prft = data[pos : pos + size]
                self._chunk_opens(next_box, now)
            elif kind == b"moof" and not self.chunk_open:
                self._chunk_opens(next_box, now)
            next_box += size
        self.next_box = next_box

    def _chunk_opens(self, at: int, now: float) -> None:
        self.chunk_open = True
        self.chunk_at = at
        self.chunk_start = now

    def _chunk_done(self, end: int, now: float) -> None:
        self.on_chunk(self.count, end - self.chunk_at, now - self.chunk_start, self.prft)
        self.count += 1
        self.chunk_open = False
        self.prft = b""
