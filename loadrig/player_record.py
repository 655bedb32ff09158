"""What one virtual viewer saw: the record a player fills and the report reads.

Apart from the player so that the report, the results file and the scheduler can read a
viewer's record without the machinery that fills it.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

from loadrig.abr import BufferModel

# the steps from pressing play to playing, in order: each part of the startup time is the
# time from the end of the one before (the press itself for the first) to the end of its own
STARTUP_STEPS = ("press", "mpd", "init", "first_segment")


def _samples() -> array[float]:
    return array("d")


@dataclass(slots=True)
class PlayerRecord:
    """What one viewer saw.  ``state``: starting, playing, stalled, ended, failed.

    The per-segment samples grow for as long as the viewer watches, so they are arrays of
    doubles, not lists: 8 bytes a sample instead of 32 (a float object and its reference),
    and a full collection steps over an array at once where it visits every item of a
    list (thousands of viewers, an hour of segments each).
    """

    index: int
    device: str
    state: str = "starting"
    joined_at: float = 0.0
    startup_s: float | None = None
    stalls: list[float] = field(default_factory=list)
    latency_s: array[float] = field(default_factory=_samples)  # per segment, playhead vs live
    delivery_ms: array[float] = field(default_factory=_samples)  # per segment, prft -> arrival
    ttfb_ms: array[float] = field(default_factory=_samples)  # per segment request
    switches: int = 0
    failovers: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rungs: Counter[str] = field(default_factory=Counter)  # segments fetched per rung
    bytes: int = 0
    edge: str = ""
    session: str = ""  # the playback session's id (its CMCD sid); none with given URLs
    buffer: BufferModel | None = None
    failover_gaps: list[float] = field(default_factory=list)  # edge failed -> next chunk, s
    failover_stalls: list[float] = field(default_factory=list)  # stall so far at that chunk
    # when each startup step first ended (time.time()): press-play answered, MPD read and
    # the clock synced, init segments read; the first segment's end is the startup itself
    startup_marks: dict[str, float] = field(default_factory=dict)

    def mark(self, step: str) -> None:
        """Note that ``step`` ended now, the first time only (a failover repeats steps)."""
        if self.startup_s is None and step not in self.startup_marks:
            self.startup_marks[step] = time.time()

    def startup_parts(self) -> dict[str, float]:
        """The startup time by cause (seconds per step of ``STARTUP_STEPS``; they add up to
        ``startup_s``), or nothing when the viewer never started."""
        if self.startup_s is None:
            return {}
        marks = self.startup_marks
        ends = [marks.get(step) for step in STARTUP_STEPS[:-1]]
        ends.append(self.joined_at + self.startup_s)
        parts, before = {}, self.joined_at
        for step, end in zip(STARTUP_STEPS, ends, strict=True):
            end = before if end is None else end  # (a step skipped: given URLs)
            parts[step] = round(max(0.0, end - before), 4)
            before = max(before, end)
        return parts
