"""One QoE event: what an edge saw of one player request, and its wire form.

The edge writes it to the ``lm:{qoe}:events`` stream (:mod:`kernel.keys`) and the QoE
processor reads it back; both sides use this codec. An event is one line, its values
joined by ``|`` (an absent number is ``-1``), and a stream entry's one field, ``e``,
holds up to ``PER_ENTRY`` lines: Redis and its client pay per entry and per field, so
packing them is what lets one consumer core keep up with many edges.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELD = b"e"
SEP = "|"
LINE = b"\n"
ABSENT = -1
PER_ENTRY = 100  # events in one stream entry


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x, per event
class QoeEvent:
    edge: str
    region: str
    channel: str
    rung: str  # the representation id from the path ("" for a manifest)
    status: int  # HTTP status the viewer got (0: the answer failed before a head)
    size: int  # body bytes
    ttfb_ms: int  # request accepted -> response head ready at the edge
    ts_ms: int  # wall clock at the edge when the event was made
    br: int = ABSENT  # CMCD: encoded bitrate, kbps
    bl: int = ABSENT  # buffer length, ms
    mtp: int = ABSENT  # measured throughput, kbps
    rtp: int = ABSENT  # requested max throughput, kbps
    bs: bool = False  # buffer starved since the last request
    su: bool = False  # startup (or seek, or recovery)
    sid: str = ""

    def encode(self) -> bytes:
        parts = (
            _clean(self.edge),
            _clean(self.region),
            _clean(self.channel),
            _clean(self.rung),
            self.status,
            self.size,
            self.ttfb_ms,
            self.ts_ms,
            self.br,
            self.bl,
            self.mtp,
            self.rtp,
            int(self.bs),
            int(self.su),
            _clean(self.sid),
        )
        return SEP.join(map(str, parts)).encode()


def decode(raw: bytes) -> QoeEvent | None:
    """The event of one stream entry's field; None when it is not one (counted by callers)."""
    parts = raw.decode("utf-8", "replace").split(SEP)
    if len(parts) != 15:
        return None
    try:
        return QoeEvent(
            parts[0],
            parts[1],
            parts[2],
            parts[3],
            int(parts[4]),
            int(parts[5]),
            int(parts[6]),
            int(parts[7]),
            int(parts[8]),
            int(parts[9]),
            int(parts[10]),
            int(parts[11]),
            parts[12] == "1",
            parts[13] == "1",
            parts[14],
        )
    except ValueError:
        return None


def pack(lines: list[bytes]) -> bytes:
    """One stream entry's field from encoded events."""
    return LINE.join(lines)


def unpack(field: bytes) -> list[bytes]:
    return field.split(LINE)


def _clean(text: str) -> str:
    return text.replace(SEP, "_").replace("\n", "_")
