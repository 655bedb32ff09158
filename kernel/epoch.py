"""The records of a channel's manifest state: its epoch, renditions and live-edge position.

In the kernel because the packager writes them, and the origin and the channels
service (a channel's live status) read them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Representation:
    """One published rendition of an epoch, as the encoder actually made it."""

    id: str
    kind: str  # "video" or "audio"
    codecs: str  # RFC 6381 codec string, e.g. "avc1.64001f", "mp4a.40.2"
    bandwidth: int
    timescale: int
    width: int = 0
    height: int = 0
    frame_rate: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True)
class Epoch:
    """One uninterrupted encoder run: its id is a path component of every URL it serves."""

    id: str
    start_ms: int  # wall-clock (UTC, ms) of media time 0
    representations: tuple[Representation, ...]

    def representation(self, rep_id: str) -> Representation | None:
        return next((r for r in self.representations if r.id == rep_id), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Epoch:
        raw = json.loads(text)
        reps = tuple(Representation(**r) for r in raw["representations"])
        return cls(id=raw["id"], start_ms=raw["start_ms"], representations=reps)


@dataclass(frozen=True)
class Position:
    """How far a rendition has got: the newest chunk stored, and whether its segment is whole."""

    segment: int
    chunk: int
    complete: bool

    def encode(self) -> str:
        return f"{self.segment}:{self.chunk}:{int(self.complete)}"

    @classmethod
    def decode(cls, text: str | bytes) -> Position:
        segment, chunk, complete = (text.decode() if isinstance(text, bytes) else text).split(":")
        return cls(int(segment), int(chunk), complete == "1")

    def has_complete(self, segment: int) -> bool:
        return segment < self.segment or (segment == self.segment and self.complete)
