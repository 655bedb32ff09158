"""A channel's segment duration D and chunk duration C (DESIGN.md §3), in milliseconds.

Here, not in ``live``, because the channel's configuration record (written by the
channels service, read by the packager) is validated against it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeline:
    """Segment and chunk durations of a channel, in milliseconds."""

    segment_ms: int = 2000
    chunk_ms: int = 200

    def __post_init__(self) -> None:
        if self.chunk_ms <= 0 or self.segment_ms <= 0:
            raise ValueError("segment and chunk durations must be positive")
        if self.segment_ms % self.chunk_ms:
            raise ValueError("segment duration must be a multiple of the chunk duration")

    @property
    def chunks_per_segment(self) -> int:
        return self.segment_ms // self.chunk_ms

    def segment_at(self, media_ms: int) -> int:
        """The segment whose interval holds media time ``media_ms``."""
        return media_ms // self.segment_ms

    def chunk_start_ms(self, segment: int, chunk: int) -> int:
        return segment * self.segment_ms + chunk * self.chunk_ms

    def chunk_available_ms(self, segment: int, chunk: int) -> int:
        """Media time at which chunk ``chunk`` of ``segment`` is complete (before encode delay)."""
        return self.chunk_start_ms(segment, chunk + 1)
