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
        self._segment_started: int | None = None
        self._ended_at = 0  # access unit where the last emitted chunk ended
        self._ended_in: int | None = None  # and the segment it belonged to

    def add(self, unit: EncodedUnit) -> list[Chunk]:
        """Take one access unit; returns the chunks it completed (zero, one or two)."""
        position = self.clock.chunk_of(unit.index)
        done: list[Chunk] = []
        if self._pending_at is not None and position != self._pending_at:
            # units were skipped: the pending chunk ends early, its last sample lasting
            # until this one, so the timeline has no hole for a player to fall into
            ends_segment = position[0] != self._pending_at[0]
            done.append(self._emit(ends_segment, next_index=unit.index))
        self._pending.append(unit)
        self._pending_at = position
        chunk_units = self.clock.chunk_units(*position)
        if unit.index == chunk_units[-1]:
            ends_segment = position[1] == self.clock.timeline.chunks_per_segment - 1
            done.append(self._emit(ends_segment, next_index=chunk_units.stop))
        return done

    def flush(self) -> list[Chunk]:
        """Emit what is pending as the end of its segment (the source stopped)."""
        if not self._pending:
            return []
        return [self._emit(ends_segment=True, next_index=self._pending[-1].index + 1)]

    def _emit(self, ends_segment: bool, next_index: int) -> Chunk:
        """The pending units as one chunk, covering the timeline without holes.

        Each sample lasts until the next one starts; a chunk whose first frames were
        skipped starts where the previous chunk of its segment ended.
        """
        assert self._pending_at is not None
        segment, chunk = self._pending_at
        indices = [u.index for u in self._pending]
        start = self._ended_at if self._ended_in == segment else indices[0]
        starts = [start, *indices[1:]]
        ends = [*indices[1:], next_index]
        samples = [
            Sample(u.data, (end - begin) * self.unit_duration, u.sync)
            for u, begin, end in zip(self._pending, starts, ends, strict=True)
        ]
        self._ended_at, self._ended_in = next_index, segment
        base_time = start * self.unit_duration
        wallclock_ms = self.start_ms + base_time * 1000 // self.track.timescale
        # numbered by place on the timeline, not by count: a pipeline that joined an epoch
        # late numbers its fragments as the one that ran from the start
        sequence = segment * self.clock.timeline.chunks_per_segment + chunk + 1
        parts = [
            prft(self.track.track_id, wallclock_ms, base_time),
            fragment(sequence, self.track.track_id, base_time, samples),
        ]
        if self._segment_started != segment:
            self._segment_started = segment
            parts.insert(0, styp())
        self._pending, self._pending_at = [], None
        return Chunk(segment, chunk, b"".join(parts), ends_segment)
