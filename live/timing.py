"""The live timing model: one truth for encoder, packager, MPD and origin.

A channel run (an *epoch*) starts at a wall-clock instant.  Media time 0 is that
instant.  Segment ``n`` covers ``[n*D, (n+1)*D)`` and is cut into chunks of ``C``.
Everything here is integer arithmetic on milliseconds and *access units* (a video
frame, or one 1024-sample AAC frame), so no float drift can creep in.

Audio frames do not divide D (2 s is 93.75 AAC frames at 48 kHz): every boundary
is the first whole access unit *after* the nominal time, computed from the absolute
time, so an audio chunk ends less than a frame after its nominal end and the error
never accumulates.  Never before it, nor on it: a player holds its buffered end
against the playlist's part boundaries, and a browser's buffered end is short of the
true one (Chromium keeps microseconds, truncated, and an AAC frame is 21,333.3 µs: a
chunk ending exactly on 1.6 s, 75 frames, is buffered to 1.599999 s).  hls.js then
takes the part it has as the one to load next, and after a switch of Pathway, whose
playlist knows no part as loaded, waits for the next segment (issue 14).
"""

from __future__ import annotations

import math
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
        """The access unit a chunk starting at ``media_ms`` starts with.

        A track whose units tile the chunk grid (30 fps video: six frames a chunk) cuts
        exactly on it; one whose units do not (AAC) at the first unit starting after
        ``media_ms`` (time 0 aside), so each chunk ends after its nominal end (by at least
        2.7 ms at 48 kHz) and a buffer holding it reaches past the part boundary.
        """
        exact = Fraction(media_ms, 1000) * self.units_per_second
        if media_ms == 0 or self.tiles_grid:
            return int(exact + Fraction(1, 2))
        return math.floor(exact) + 1

    @property
    def tiles_grid(self) -> bool:
        """Whether a chunk holds a whole number of units (video), so they fall on the grid."""
        return (Fraction(self.timeline.chunk_ms, 1000) * self.units_per_second).denominator == 1

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
