"""The virtual player's pure parts: a buffer model and a throughput-based rung choice.

Time is always passed in (seconds on the player's clock), media positions are media
seconds of the epoch (0 is the MPD's availabilityStartTime), so tests drive both by hand.

**Buffer model.**  The player has received media up to ``received_end``.  Playback
starts at the *start point* (the live point, ``live_delay`` behind the live edge when
the first media arrives, where dash.js seeks to) once ``start_buffer`` of media past it
has arrived (a late encoder makes startup longer and latency higher, as in dash.js),
then advances at rate 1, or at ``catchup_rate`` while more than ``tolerance`` behind
the target latency.  When the playhead reaches ``received_end`` the player stalls; it
resumes once ``resume_buffer`` of media is buffered again.  Every stall's duration is recorded.

**Rung choice.**  Low-latency chunked delivery makes a segment's download time equal to
its production time, so throughput is measured per chunk *burst* (bytes of a chunk over
the time from its first to its last byte, as dash.js's low-latency throughput rule
does), smoothed by an EWMA, capped by the device's simulated last-mile bandwidth; the
highest rung under ``safety`` times that estimate is chosen, one rung lower when the
buffer is below ``panic_buffer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class BufferModel:
    live_delay_s: float = 0.6
    start_buffer_s: float = 0.2
    resume_buffer_s: float = 0.2
    catchup_rate: float = 1.04
    tolerance_s: float = 0.1
    catchup_min_buffer_s: float = 0.5
    received_end: float = 0.0
    playhead: float | None = None  # None until playback starts
    start_point: float | None = None  # where playback will start (set by the first media)
    playing: bool = False
    started_at: float | None = None  # player clock time playback started
    stalls: list[float] = field(default_factory=list)  # finished stalls, seconds
    stall_since: float | None = None
    _last: float = 0.0

    def live_point(self, live_edge: float) -> float:
        return live_edge - self.live_delay_s

    def on_media(self, end: float, now: float, live_edge: float) -> None:
        """Media up to ``end`` has arrived at ``now``; the live edge is at ``live_edge``."""
        self.advance(now, live_edge)
        if end > self.received_end:
            self.received_end = end
        if self.playhead is None:
            if self.start_point is None:  # dash.js seeks to the live point once, at load
                self.start_point = self.live_point(live_edge)
            start = self.start_point
            if self.received_end >= start + self.start_buffer_s:
                self.playhead = start
                self.playing = True
                self.started_at = now
        elif not self.playing and self.level >= self.resume_buffer_s:
            if self.stall_since is not None:
                self.stalls.append(now - self.stall_since)
                self.stall_since = None
            self.playing = True
        self._last = now

    def advance(self, now: float, live_edge: float) -> None:
        """Play from the last update to ``now`` (stalling if the buffer runs out)."""
        if self.playhead is not None and self.playing and now > self._last:
            behind = live_edge - self.playhead - self.live_delay_s
            # dash.js catches up only with buffer to spare (liveCatchup.playbackBufferMin)
            spare = self.received_end - self.playhead > self.catchup_min_buffer_s
            rate = self.catchup_rate if behind > self.tolerance_s and spare else 1.0
            ahead = self.received_end - self.playhead
            elapsed = now - self._last
            if elapsed * rate <= ahead:
                self.playhead += elapsed * rate
            else:
                self.playhead = self.received_end
                self.playing = False
                self.stall_since = self._last + ahead / rate
        self._last = max(self._last, now)

    @property
    def level(self) -> float:
        """Seconds of media buffered ahead of the playhead."""
        if self.playhead is None:
            return 0.0
        return max(0.0, self.received_end - self.playhead)

    def latency(self, live_edge: float) -> float | None:
        """Live latency: how far the playhead is behind the live edge (seconds)."""
        return None if self.playhead is None else live_edge - self.playhead

    def finish(self, now: float, live_edge: float) -> None:
        """End of viewing: an ongoing stall counts up to ``now``."""
        self.advance(now, live_edge)
        if self.stall_since is not None:
            self.stalls.append(now - self.stall_since)
            self.stall_since = None

    @property
    def longest_stall(self) -> float:
        return max(self.stalls, default=0.0)


@dataclass(slots=True)
class ThroughputEstimate:
    """EWMA of chunk-burst throughput (bits per second), capped by a simulated link."""

    alpha: float = 0.3
    cap_bps: float = 0.0  # 0: no cap
    value_bps: float = 0.0

    def add(self, nbytes: int, seconds: float) -> None:
        if nbytes <= 0:
            return
        sample = nbytes * 8 / max(seconds, 1e-4)
        if self.cap_bps:
            sample = min(sample, self.cap_bps)
        if self.value_bps == 0.0:
            self.value_bps = sample
        else:
            self.value_bps += self.alpha * (sample - self.value_bps)

    @property
    def bps(self) -> float:
        if self.cap_bps and self.value_bps == 0.0:
            return self.cap_bps
        return self.value_bps


def choose_rung(
    ladder: Sequence[tuple[str, int]],
    estimate_bps: float,
    buffer_s: float,
    current: str | None = None,
    *,
    safety: float = 0.9,
    panic_buffer_s: float = 0.2,
    max_rung: str = "",
) -> str:
    """The rung to fetch next from ``ladder`` (``(id, bandwidth)`` pairs, any order).

    The highest rung at most ``max_rung`` whose bandwidth fits ``safety * estimate``
    (the lowest when none fits, or when nothing is known yet); one rung below the
    current one when the buffer is under ``panic_buffer_s`` while playing.
    """
    rungs = sorted(ladder, key=lambda r: r[1])
    if max_rung:
        cap = next((bw for rid, bw in rungs if rid == max_rung), None)
        if cap is None:
            raise ValueError(f"max_rung {max_rung!r} is not in the ladder")
        rungs = [r for r in rungs if r[1] <= cap]
    ids = [rid for rid, _ in rungs]
    pick = 0
    for i, (_rid, bandwidth) in enumerate(rungs):
        if bandwidth <= safety * estimate_bps:
            pick = i
    if current in ids and buffer_s < panic_buffer_s:
        pick = min(pick, max(0, ids.index(current) - 1))
    return ids[pick]
