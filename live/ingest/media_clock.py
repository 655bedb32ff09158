"""The mapping of one broadcaster's clock onto the wall clock, with its playout delay.

Apart from :mod:`live.ingest.ingest_source` because it is pure arithmetic on timestamps
(no frames, no locks), tested on its own.
"""

from __future__ import annotations

import math

PLAYOUT_DELAY_MS = 150  # input is played this long after it arrives: absorbs network jitter
LATE_MARGIN_MS = 50  # the channel pulls sound up to a video frame ahead of its time
RESYNC_AHEAD_MS = 1000  # a frame mapped this far beyond arrival + delay re-anchors its clock
SHRINK_WINDOW_MS = 2000  # arrivals watched before the playout delay may shrink back
SHRINK_MARGIN_MS = 50  # buffered beyond the playout delay the whole window: give it back


class MediaClock:
    """Maps one input clock (seconds) onto the wall clock (ms).

    A late frame re-anchors the mapping at its own arrival, so after a jitter
    spike every later frame is buffered for the spike as well.  The mapping
    therefore watches the least buffering of each :data:`SHRINK_WINDOW_MS` of
    arrivals; when even that exceeds the playout delay by more than
    :data:`SHRINK_MARGIN_MS`, the excess is given back (the picture skips ahead
    once, the sound is cut where the new mapping overlaps it), so the latency a
    spike added does not stay for the rest of the broadcast.
    """

    def __init__(self, delay_ms: int = PLAYOUT_DELAY_MS) -> None:
        self.delay_ms = delay_ms
        self._offset_ms: float | None = None
        self.resyncs = 0
        self.shrinks = 0
        self._window_start_ms: int | None = None
        self._least_slack_ms = math.inf

    def map(self, pts_s: float, arrival_ms: int) -> float:
        """Wall-clock ms at which media stamped ``pts_s`` (arrived at ``arrival_ms``) plays."""
        target = arrival_ms + self.delay_ms
        mapped = pts_s * 1000 + self._offset_ms if self._offset_ms is not None else None
        # late (would miss its slot) or far early (the buffer would grow): re-anchor
        late = arrival_ms + LATE_MARGIN_MS
        if mapped is None or mapped < late or mapped > target + RESYNC_AHEAD_MS:
            if mapped is not None:
                self.resyncs += 1
            self._offset_ms = target - pts_s * 1000
            self._window_start_ms, self._least_slack_ms = arrival_ms, math.inf
            return float(target)
        self._least_slack_ms = min(self._least_slack_ms, mapped - arrival_ms)
        if self._window_start_ms is None:
            self._window_start_ms = arrival_ms
        elif arrival_ms - self._window_start_ms >= SHRINK_WINDOW_MS:
            excess = self._least_slack_ms - self.delay_ms
            if excess > SHRINK_MARGIN_MS and self._offset_ms is not None:
                self._offset_ms -= excess
                mapped -= excess
                self.shrinks += 1
            self._window_start_ms, self._least_slack_ms = arrival_ms, math.inf
        return mapped
