"""The CMAF packager: cuts a rendition's access units into LL-DASH chunks.

A chunk is emitted the moment its last access unit arrives, so a chunk leaves
the packager at most one frame after its media is encoded.  Each chunk is
``prft`` + ``moof`` + ``mdat``; the first chunk of a segment is preceded by
``styp``.  Boundaries come from :class:`live.timing.UnitClock`, never from the
encoder, so every rendition cuts at the same media times.
"""

from __future__ import annotations

from dataclasses import dataclass

from live.cmaf import InitInfo, Sample, fragment, prft, styp
from live.encode import EncodedUnit
from live.timing import UnitClock


@dataclass(frozen=True)
class Chunk:
    """A finished chunk of one rendition, ready to publish."""

    segment: int
    chunk: int
    data: bytes
    last: bool  # the segment is complete with this chunk


class ChunkPackager:
    """Packages one rendition.  Not thread-safe: owned by the encode loop."""

    def __init__(
        self, clock: UnitClock, track: InitInfo, unit_duration: int, start_ms: int
    ) -> None:
        self.clock = clock
        self.track = track
        self.unit_duration = unit_duration
        self.start_ms = start_ms  # wall-clock time of media time 0
        self._pending: list[EncodedUnit] = []
        self._pending_at: tuple[int, int] | None = None
        self._sequence = 0
        self._segment_started: int | None = None

    def add(self, unit: EncodedUnit) -> list[Chunk]:
        """Take one access unit; returns the chunks it completed (zero, one or two)."""
        position = self.clock.chunk_of(unit.index)
        done: list[Chunk] = []
        if self._pending_at is not None and position != self._pending_at:
            # units were skipped: the pending chunk ends early
            done.append(self._emit(ends_segment=position[0] != self._pending_at[0]))
        self._pending.append(unit)
        self._pending_at = position
        if unit.index == self.clock.chunk_units(*position)[-1]:
            done.append(
                self._emit(ends_segment=position[1] == self.clock.timeline.chunks_per_segment - 1)
            )
        return done

    def flush(self) -> list[Chunk]:
        """Emit what is pending as the end of its segment (the source stopped)."""
        return [self._emit(ends_segment=True)] if self._pending else []

    def _emit(self, ends_segment: bool) -> Chunk:
        assert self._pending_at is not None
        segment, chunk = self._pending_at
        first = self._pending[0].index
        base_time = first * self.unit_duration
        wallclock_ms = self.start_ms + base_time * 1000 // self.track.timescale
        samples = [Sample(u.data, self.unit_duration, u.sync) for u in self._pending]
        self._sequence += 1
        parts = [
            prft(self.track.track_id, wallclock_ms, base_time),
            fragment(self._sequence, self.track.track_id, base_time, samples),
        ]
        if self._segment_started != segment:
            self._segment_started = segment
            parts.insert(0, styp())
        self._pending, self._pending_at = [], None
        return Chunk(segment, chunk, b"".join(parts), ends_segment)
