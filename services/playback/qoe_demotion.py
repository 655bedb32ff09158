"""Which edges press play and steering demote for their viewers' QoE: pure, so it is
tested without sockets (the Redis side is :mod:`.qoe_health`).

An edge's QoE health (``lm:{qoe}:health:{edge}``, written by ``livemesh qoe`` once per
window) is a score 0..1 made of what its viewers' players report (stalls, errors, slow
starts). The policy is a hysteresis loop, so that an edge near the line does not flap:

- **demoted** when a window with enough requests (``min_requests``) from enough
  sessions (``min_sessions``, CMCD ``sid``s) scores below ``demote_below``: one viewer
  is no verdict on an edge (its start alone, slow first bytes of a segment still being
  made, can score low), and 5 s of one low-latency player are 10 requests. A window is
  the processor's last 5 s, read each second (:mod:`services.qoe.health`): overlapping
  windows are one piece of evidence each, so a bad burst keeps an edge out until it has
  slid out of the window;
- **restored** only when windows score at or above ``restore_above`` (higher) for
  ``hold_s``; a score between the two keeps the edge where it is;
- a demoted edge loses its viewers, so its windows soon say nothing. After ``hold_s``
  without evidence it goes **on probation** (as a circuit breaker half-opens): press
  play ranks it as usual again, so new sessions are the probe, while steering still
  leaves it out, so the players that left do not all come back to an edge that may still
  be bad. A probation edge that scores badly again is demoted for twice as long (up to
  ``max_hold_s``); one that scores well is healthy (steering too), and its count of
  strikes starts again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class DemotionPolicy:
    demote_below: float = 0.6
    restore_above: float = 0.8
    hold_s: float = 5.0  # good (or silent) this long before an edge is restored
    max_hold_s: float = 20.0  # the longest hold after repeated strikes
    min_requests: int = 10  # a window (5 s of an edge's viewers) with fewer says nothing
    min_sessions: int = 3  # nor one with fewer viewers (players without a sid count none)

    def hold(self, strikes: int) -> float:
        """How long an edge demoted for the ``strikes``-th time in a row stays out."""
        return min(self.max_hold_s, self.hold_s * 2 ** max(0, strikes - 1))


@dataclass(frozen=True)
class Health:
    """One window's QoE of an edge, as the processor wrote it."""

    score: float
    requests: int
    window: int  # the window's start, s: a window seen before is not new evidence
    sessions: int  # distinct CMCD sids


class State(Enum):
    HEALTHY = "healthy"
    DEMOTED = "demoted"
    PROBATION = "probation"  # restored without evidence: its next window decides


@dataclass
class EdgeQoe:
    state: State = State.HEALTHY
    strikes: int = 0  # demotions since the edge last proved healthy
    since: float = 0.0  # when it was demoted, or last scored short of good since
    good_since: float | None = None  # start of its current run of good windows
    last_window: int = -1


@dataclass(frozen=True)
class Verdict:
    """What press play and steering do about the edges' QoE."""

    demoted: frozenset[str] = frozenset()  # press play ranks them last; steering drops them
    probation: frozenset[str] = frozenset()  # press play as usual; steering drops them

    @property
    def off_steering(self) -> frozenset[str]:
        return self.demoted | self.probation


@dataclass
class Demoter:
    """Each edge's state, moved by the health read at ``now`` (monotonic seconds)."""

    policy: DemotionPolicy = field(default_factory=DemotionPolicy)
    edges: dict[str, EdgeQoe] = field(default_factory=dict)

    def observe(self, health: Mapping[str, Health | None], now: float) -> Verdict:
        """Update from one read of the edges' health (None: no fresh window)."""
        for name, found in health.items():
            self._step(self.edges.setdefault(name, EdgeQoe()), found, now)
        for gone in set(self.edges) - set(health):
            del self.edges[gone]  # left the registry: a comeback starts afresh
        return Verdict(self._in(State.DEMOTED), self._in(State.PROBATION))

    def _in(self, state: State) -> frozenset[str]:
        return frozenset(n for n, e in self.edges.items() if e.state is state)

    def _step(self, edge: EdgeQoe, found: Health | None, now: float) -> None:
        policy = self.policy
        if found is not None and found.window == edge.last_window:
            found = None  # the same window read again: nothing new
        elif found is not None:
            edge.last_window = found.window
        evidence = (
            found is not None
            and found.requests >= policy.min_requests
            and found.sessions >= policy.min_sessions
        )
        bad = evidence and found is not None and found.score < policy.demote_below
        good = evidence and found is not None and found.score >= policy.restore_above
        if edge.state is State.DEMOTED:
            if good:
                edge.good_since = now if edge.good_since is None else edge.good_since
            elif evidence:  # bad, or not yet good: still out, and its hold starts again
                edge.good_since, edge.since = None, now
            if edge.good_since is not None and now - edge.good_since >= policy.hold_s:
                self._restore(edge)
            elif edge.good_since is None and now - edge.since >= policy.hold(edge.strikes):
                edge.state = State.PROBATION  # silent since its hold began: try it again
        elif bad:
            edge.state, edge.since, edge.good_since = State.DEMOTED, now, None
            edge.strikes += 1
        elif good:
            self._restore(edge)

    @staticmethod
    def _restore(edge: EdgeQoe) -> None:
        edge.state, edge.strikes, edge.good_since = State.HEALTHY, 0, None


def instance_edge(instance_name: str) -> str:
    """The registry's ``instances/{id}`` as the edge's name in its QoE events (``{id}``)."""
    return instance_name.rsplit("/", 1)[-1]


def steering_order(names: Iterable[str], verdict: Verdict) -> list[str]:
    """``names`` in order less those steering leaves out, unless that leaves none."""
    names = list(names)
    off = verdict.off_steering
    kept = [n for n in names if n not in off]
    return kept or names
