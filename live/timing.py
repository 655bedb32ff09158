"""The live timing model: one truth for encoder, packager, MPD and origin.

A channel run (an *epoch*) starts at a wall-clock instant.  Media time 0 is that
instant.  Segment ``n`` covers ``[n*D, (n+1)*D)`` and is cut into chunks of ``C``.
Everything here is integer arithmetic on milliseconds and *access units* (a video
frame, or one 1024-sample AAC frame), so no float drift can creep in.

Audio frames do not divide D (2 s is 93.75 AAC frames at 48 kHz): every boundary
is rounded to the nearest whole access unit of the *absolute* time, so an audio
segment ends on the frame nearest its nominal end and the error never accumulates.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from kernel.timeline import Timeline

# How many segment durations the origin waits for the encoder on a held request (the next
# segment's first chunk, a blocking playlist reload) before answering 503; the edges'
# nested waits are built on it.
HOLD_SEGMENTS = 2


@dataclass(frozen=True)
class UnitClock:
    """Maps a track's access units (frames) onto the timeline's chunk grid.

    ``units_per_second`` is exact: 30 for 30 fps video, ``Fraction(48000, 1024)``
    for AAC at 48 kHz.
    """

    timeline: Timeline
    units_per_second: Fraction

    def boundary(self, media_ms: int) -> int:
        """The first access unit at or nearest after ``media_ms`` (round half up)."""
        exact = Fraction(media_ms, 1000) * self.units_per_second
        return int(exact + Fraction(1, 2))

    def chunk_units(self, segment: int, chunk: int) -> range:
        """The access units that chunk ``chunk`` of ``segment`` carries."""
        start = self.boundary(self.timeline.chunk_start_ms(segment, chunk))
        end = self.boundary(self.timeline.chunk_start_ms(segment, chunk + 1))
        return range(start, end)

    def chunk_of(self, unit: int) -> tuple[int, int]:
        """The ``(segment, chunk)`` that carries access unit ``unit``."""
        approx_ms = int(Fraction(unit) / self.units_per_second * 1000)
        flat = approx_ms // self.timeline.chunk_ms
        while self.boundary((flat + 1) * self.timeline.chunk_ms) <= unit:
            flat += 1
        while self.boundary(flat * self.timeline.chunk_ms) > unit:
            flat -= 1
        return divmod(flat, self.timeline.chunks_per_segment)

    def is_last_of_chunk(self, unit: int) -> bool:
        segment, chunk = self.chunk_of(unit)
        return unit == self.chunk_units(segment, chunk)[-1]


def live_edge_segment(now_ms: int, start_ms: int, timeline: Timeline) -> int:
    """The segment being produced at wall-clock ``now_ms`` for an epoch started at ``start_ms``."""
    return timeline.segment_at(now_ms - start_ms)
