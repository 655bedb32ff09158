"""Windowed QoE counters: what a batch of events adds to each second, and the figures
(rebuffer ratio, startup, bitrate, throughput, error rate, score) a window's sums give.

Only sums are kept (counts, totals), per second, so two consumers' batches add up in
Redis in any order, a window of any length is the sum of its seconds, and its figures
are ratios of those sums, computed when read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kernel.qoe_event import QoeEvent

DIMENSIONS = ("edge", "channel", "region", "rung")
# the sums of one (second, edge, channel, region, rung), in this order
COUNTERS = (
    "requests",
    "errors",  # answers with a status >= 400, or none
    "starved",  # requests whose CMCD said bs past the session's start-up: a rebuffer
    "startup",  # requests with su: the player was starting (or seeking, recovering)
    "startup_ttfb_ms",  # time to first byte of those
    "ttfb_ms",
    "bytes",
    "br_sum",
    "br_n",
    "mtp_sum",
    "mtp_n",
)
Combo = tuple[int, str, str, str, str]  # second (s since the epoch), edge, channel, region, rung
SEP = "|"
MAX_SESSIONS = 100_000  # sessions whose last edge is remembered; emptied when full


class SessionEdges:
    """What a consumer remembers of each session (CMCD ``sid``): the edge it was last
    heard from, and whether it is past its start-up.

    The edge, so that a stall is laid at the right door: CMCD's ``bs`` says the buffer ran
    dry *since the last request*, so a player that stalled on one edge and was steered to
    another reports it to the new one.

    The start-up, so that a player's first buffering is not counted as a rebuffer: dash.js
    reports ``bs`` (with ``su``) on its first media requests of a live start, its buffer
    being empty before anything played (its CMCD model sets both on a buffer-empty event,
    and the live edge is not time 0). CTA-5004's ``su`` marks an object needed urgently for
    start-up, seeking or recovery after a buffer-empty event, so ``bs`` alone, or ``bs`` with
    ``su``, cannot tell the start from a stall; the session's history can. A session is past
    its start-up once it has made a media request (one with a representation) without
    ``su``: players drop ``su`` once they are playing (dash.js after its initial media
    requests, hls.js once playing), and manifests and playlists, which dash.js asks for
    without ``su`` before anything plays, have no representation. A ``bs`` before that is
    the start's (unless that request itself, not the session's first, says it is no
    start); one after, with or without ``su``, a rebuffer (:func:`rebuffered`).

    Each consumer keeps its own (an edge sends a session's events in order; consumers
    sharing the group each see a session within its first seconds of playing)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self.last: dict[str, str] = {}
        self.playing: set[str] = set()  # sessions past their start-up

    def note(self, e: QoeEvent) -> tuple[str | None, bool]:
        """Note ``e`` of its session: the edge the session was last heard from, and
        whether it was past its start-up, before ``e``."""
        sid, last = e.sid, self.last
        before = last.get(sid)
        if before is None and len(last) >= self.max_sessions:
            last.clear()
            self.playing.clear()
        last[sid] = e.edge
        was_playing = sid in self.playing
        if not was_playing and e.rung and not e.su:
            self.playing.add(sid)
        return before, was_playing


def rebuffered(e: QoeEvent, before: str | None, was_playing: bool) -> bool:
    """Whether ``e`` reports a rebuffer: a ``bs`` of a session past its start-up
    (``was_playing``, :class:`SessionEdges`), or one its player says is not a start (a
    media request without ``su``) after the session's first request; without a session,
    every ``bs``."""
    if not e.bs:
        return False
    if not e.sid or was_playing:
        return True
    return before is not None and bool(e.rung) and not e.su


class Batch:
    """The sums of a batch of events per second and combination of dimensions."""

    def __init__(self, sessions: SessionEdges | None = None) -> None:
        self.sessions = sessions if sessions is not None else SessionEdges()
        self.sums: dict[Combo, list[int]] = {}
        self.sids: dict[tuple[int, str], set[str]] = {}  # (second, edge) -> its sessions
        self.events = 0

    def _sums(self, combo: Combo) -> list[int]:
        sums = self.sums.get(combo)
        if sums is None:
            sums = self.sums[combo] = [0] * len(COUNTERS)
        return sums

    def add(self, e: QoeEvent) -> None:
        start = e.ts_ms // 1000
        sums = self._sums((start, e.edge, e.channel, e.region, e.rung))
        before, was_playing = self.sessions.note(e) if e.sid else (None, False)
        if e.sid:
            self.sids.setdefault((start, e.edge), set()).add(e.sid)
        self.events += 1
        sums[0] += 1
        if e.status >= 400 or e.status == 0:
            sums[1] += 1
        if rebuffered(e, before, was_playing):
            if before is None or before == e.edge:
                sums[2] += 1
            else:  # it ran dry on the edge it came from
                self._sums((start, before, e.channel, e.region, e.rung))[2] += 1
        if e.su:
            sums[3] += 1
            sums[4] += e.ttfb_ms
        sums[5] += e.ttfb_ms
        sums[6] += e.size
        if e.br >= 0:
            sums[7] += e.br
            sums[8] += 1
        if e.mtp >= 0:
            sums[9] += e.mtp
            sums[10] += 1

    def increments(self) -> dict[int, dict[str, int]]:
        """second -> hash field (``dim=value|counter``) -> what to add."""
        out: dict[int, dict[str, int]] = {}
        for (start, *values), sums in self.sums.items():
            fields = out.setdefault(start, {})
            for dim, value in zip(DIMENSIONS, values, strict=True):
                prefix = f"{dim}={value}{SEP}"
                for name, amount in zip(COUNTERS, sums, strict=True):
                    if amount:
                        field = prefix + name
                        fields[field] = fields.get(field, 0) + amount
        return out


@dataclass(frozen=True)
class Figures:
    requests: int
    rebuffer_ratio: float  # share of requests that reported a starved buffer
    startup_share: float  # share of requests made while starting
    startup_ms: float  # mean time to first byte of startup requests
    bitrate_kbps: float
    throughput_kbps: float
    error_rate: float
    ttfb_ms: float

    @property
    def score(self) -> float:
        """0 (unwatchable) .. 1: stalls weigh most, then errors, then slow starts."""
        penalty = 3 * self.rebuffer_ratio + 2 * self.error_rate + min(0.3, self.startup_ms / 1e4)
        return max(0.0, 1.0 - penalty)


def figures(window: Mapping[str, str | int]) -> dict[tuple[str, str], Figures]:
    """The figures of each ``(dimension, value)`` of a window's sums (one second's hash,
    or the fields of its seconds added up)."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for field, amount in window.items():
        head, _, counter = field.rpartition(SEP)
        dim, _, value = head.partition("=")
        sums.setdefault((dim, value), {})[counter] = int(amount)
    return {key: _figures(s) for key, s in sums.items() if s.get("requests")}


def _figures(s: Mapping[str, int]) -> Figures:
    n = s["requests"]
    startup = s.get("startup", 0)
    return Figures(
        requests=n,
        rebuffer_ratio=min(1.0, s.get("starved", 0) / n),
        startup_share=startup / n,
        startup_ms=s.get("startup_ttfb_ms", 0) / startup if startup else 0.0,
        bitrate_kbps=_mean(s, "br"),
        throughput_kbps=_mean(s, "mtp"),
        error_rate=s.get("errors", 0) / n,
        ttfb_ms=s.get("ttfb_ms", 0) / n,
    )


def _mean(s: Mapping[str, int], name: str) -> float:
    count = s.get(f"{name}_n", 0)
    return s.get(f"{name}_sum", 0) / count if count else 0.0


def edges(found: Iterable[tuple[tuple[str, str], Figures]]) -> dict[str, Figures]:
    """The edges' figures among a window's."""
    return {value: f for (dim, value), f in found if dim == "edge"}


def window_sums(seconds: Iterable[Mapping[bytes | str, bytes | str]]) -> Counter[str]:
    """A window's sums: its seconds' counters (each second's hash as Redis returns it)
    added up; what :func:`figures` reads."""
    sums: Counter[str] = Counter()
    for second in seconds:
        sums.update({_text(k): int(v) for k, v in second.items()})
    return sums


def _text(field: bytes | str) -> str:
    return field.decode() if isinstance(field, bytes) else field
