"""ISO-BMFF boxes that livemesh writes or reads itself.

FFmpeg's mp4 muxer (through PyAV) writes each rendition's init segment.  The
media fragments are written here because LL-DASH needs exact control that the
muxer does not give: a chunk must end exactly on the chunk grid of the timing
model (audio included, whose frames do not divide the grid), a segment starts
with ``styp``, and every chunk carries a ``prft`` tying its media time to the
wall clock.  No maintained Python library writes CMAF chunks from encoded
packets, so the handful of boxes involved are hand-written, each a small
``bytes`` builder with a matching reader for the tests and the tooling.  Walking boxes
(and reading ``prft``, which the load rig needs too) is :mod:`kernel.isobmff`'s.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kernel.isobmff import NTP_EPOCH_OFFSET_S, box, find_boxes, full_box, iter_boxes

SAMPLE_FLAGS_SYNC = 0x02000000  # depends on no other sample
SAMPLE_FLAGS_NON_SYNC = 0x01010000  # depends on others, not a sync sample

TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
TRUN_DATA_OFFSET = 0x000001
TRUN_SAMPLE_DURATION = 0x000100
TRUN_SAMPLE_SIZE = 0x000200
TRUN_SAMPLE_FLAGS = 0x000400
TRUN_FLAGS = TRUN_DATA_OFFSET | TRUN_SAMPLE_DURATION | TRUN_SAMPLE_SIZE | TRUN_SAMPLE_FLAGS
PRFT_FLAG_INPUT_TO_ENCODER = 0x000001


# -- segment and chunk boxes ---------------------------------------------------------


def styp() -> bytes:
    """Segment type: a CMAF segment that is also a DASH media segment."""
    return box(b"styp", b"cmfs", struct.pack(">I", 0), b"cmfs", b"msdh", b"msix")


def prft(track_id: int, wallclock_ms: int, media_time: int) -> bytes:
    """Producer reference time: the wall-clock instant the chunk's first sample was captured."""
    seconds, millis = divmod(wallclock_ms, 1000)
    fraction = (millis << 32) // 1000
    ntp = ((seconds + NTP_EPOCH_OFFSET_S) << 32) | fraction
    return full_box(
        b"prft", 1, PRFT_FLAG_INPUT_TO_ENCODER, struct.pack(">IQQ", track_id, ntp, media_time)
    )


@dataclass(frozen=True)
class Sample:
    """One encoded access unit ready to go into a fragment."""

    data: bytes
    duration: int  # in the track's timescale
    sync: bool


def fragment(
    sequence: int, track_id: int, base_media_time: int, samples: Sequence[Sample]
) -> bytes:
    """A ``moof`` + ``mdat`` pair carrying ``samples`` (one CMAF chunk)."""

    def moof(data_offset: int) -> bytes:
        entries = b"".join(
            struct.pack(
                ">III",
                s.duration,
                len(s.data),
                SAMPLE_FLAGS_SYNC if s.sync else SAMPLE_FLAGS_NON_SYNC,
            )
            for s in samples
        )
        trun = full_box(
            b"trun", 0, TRUN_FLAGS, struct.pack(">Ii", len(samples), data_offset), entries
        )
        traf = box(
            b"traf",
            full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track_id)),
            full_box(b"tfdt", 1, 0, struct.pack(">Q", base_media_time)),
            trun,
        )
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    moof_size = len(moof(0))  # the data offset does not change the moof's size
    mdat = box(b"mdat", *(s.data for s in samples))
    return moof(moof_size + 8) + mdat


# -- readers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InitInfo:
    """What the packager needs to know from an init segment."""

    track_id: int
    timescale: int


def read_init(data: bytes) -> InitInfo:
    """Track id and timescale of the single track in an init segment."""
    tkhd = find_boxes(data, [b"moov", b"trak", b"tkhd"])[0]
    version = data[tkhd.payload_start]
    track_id_at = tkhd.payload_start + 4 + (16 if version == 1 else 8)
    (track_id,) = struct.unpack_from(">I", data, track_id_at)
    mdhd = find_boxes(data, [b"moov", b"trak", b"mdia", b"mdhd"])[0]
    version = data[mdhd.payload_start]
    timescale_at = mdhd.payload_start + 4 + (16 if version == 1 else 8)
    (timescale,) = struct.unpack_from(">I", data, timescale_at)
    return InitInfo(track_id, timescale)


VISUAL_SAMPLE_ENTRY_FIELDS = 78  # bytes of a VisualSampleEntry before its child boxes


def read_avc_codec(data: bytes) -> str:
    """RFC 6381 ``avc1.PPCCLL`` from the ``avcC`` record of an H.264 init segment."""
    stsd = find_boxes(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])[0]
    entry = next(iter_boxes(data, stsd.payload_start + 8, stsd.end))
    children = iter_boxes(data, entry.payload_start + VISUAL_SAMPLE_ENTRY_FIELDS, entry.end)
    avcc = next(b for b in children if b.type == b"avcC")
    profile, constraints, level = data[avcc.payload_start + 1 : avcc.payload_start + 4]
    return f"{entry.type.decode()}.{profile:02x}{constraints:02x}{level:02x}"


def read_tfdt(data: bytes, start: int = 0) -> int:
    """The base media decode time of the first fragment at or after ``start``."""
    tfdt = find_boxes(data, [b"moof", b"traf", b"tfdt"], start)[0]
    version = data[tfdt.payload_start]
    fmt = ">Q" if version == 1 else ">I"
    return int(struct.unpack_from(fmt, data, tfdt.payload_start + 4)[0])


def read_sample_durations(data: bytes, start: int = 0) -> list[int]:
    """Per-sample durations of the first fragment at or after ``start`` (as we write ``trun``)."""
    trun = find_boxes(data, [b"moof", b"traf", b"trun"], start)[0]
    flags = int.from_bytes(data[trun.payload_start + 1 : trun.payload_start + 4], "big")
    if flags != TRUN_FLAGS:
        raise ValueError(f"unexpected trun flags {flags:#x}")
    (count,) = struct.unpack_from(">I", data, trun.payload_start + 4)
    entries = trun.payload_start + 12
    return [struct.unpack_from(">I", data, entries + 12 * i)[0] for i in range(count)]
