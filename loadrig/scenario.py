"""Load scenarios: phases, device mix, chaos schedule and the viewer curve they make.

A scenario is a sequence of **phases** that shape the number of concurrent viewers over
time, a **device mix** (which ladder rungs viewers can reach), a **chaos schedule** and
a few player settings.  Everything here is pure: :meth:`Scenario.viewers_at` is the
target curve the scheduler follows, and :func:`device_for` deals the device mix out to
players.  The TOML format is read and validated by :mod:`loadrig.scenario_file`.

Phase kinds (each lasts ``duration_s``, curves are linear within a phase):

- ``ramp``   ``to`` viewers by the end of the phase (up or down)
- ``hold``   keep the current number
- ``flash``  ``add`` viewers arrive within the phase (a flash crowd: at most 60 s)
- ``exit``   ``fraction`` of the current viewers leave (a mass exit)
- ``return`` ``fraction`` of those who left in the last ``exit`` come back

Chaos actions: ``kill`` / ``pause`` (SIGSTOP, SIGCONT after ``duration_s``) a stack
process by ``target`` name, ``restart-redis``, ``fault`` (a gRPC fault rule through the
resilience layer's fault file, cleared after ``duration_s`` when given).

An **experiment** (optional): one the rig defines and starts on the experiment service
before the viewers press play (they get its cells), and reads out and stops after
(:mod:`loadrig.experiment`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Phase:
    kind: str
    duration_s: float
    to: int = 0  # ramp
    add: int = 0  # flash
    fraction: float = 0.0  # exit, return
    label: str = ""  # shown on the report's time axis ("main event")


@dataclass(frozen=True)
class Device:
    name: str
    share: float
    max_rung: str = ""  # highest video rung this device may pick ("" = any)
    bandwidth_kbps: float = 0.0  # simulated last-mile throughput cap (0 = none)


@dataclass(frozen=True)
class ChaosEvent:
    at_s: float
    action: str
    target: str = ""  # process name for kill/pause ("edge-1", "shield", "origin", ...)
    duration_s: float = 0.0  # pause: resume after; fault: clear after (0 = keep)
    match: str = "*"  # fault: "/pkg.Service/Method", "pkg.Service" or "*"
    error: str = ""  # fault: grpc status code name
    error_rate: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class PlayerSettings:
    live_delay_s: float = 0.6  # dash.js liveDelay: target distance behind the live edge
    start_buffer_s: float = 0.2  # media needed past the start point before playing
    resume_buffer_s: float = 0.2  # media needed to resume after a stall
    catchup_rate: float = 1.04  # playback rate while behind the target latency
    audio: bool = True  # fetch the audio rendition too
    accounts: int = 10  # sign-in pool: players reuse these accounts' tokens
    signin_share: float = 0.0  # share of players that sign in afresh (identity load)
    content: str = "channels/demo"
    segment_timeout_s: float = 4.0  # no complete segment by then: next edge


@dataclass(frozen=True)
class ExperimentCell:
    name: str
    weight: int
    value: str  # what the decision applies (live-delay: the target latency, ms)


@dataclass(frozen=True)
class ExperimentPlan:
    decision: str  # the decision it controls ("live-delay")
    display_name: str
    cells: tuple[ExperimentCell, ...]  # the first is the control


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    phases: tuple[Phase, ...]
    devices: tuple[Device, ...]
    chaos: tuple[ChaosEvent, ...] = ()
    player: PlayerSettings = field(default_factory=PlayerSettings)
    start_viewers: int = 0
    experiment: ExperimentPlan | None = None

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    def breakpoints(self) -> list[tuple[float, float]]:
        """``(t, viewers)`` corners of the piecewise-linear target curve."""
        t, now = 0.0, float(self.start_viewers)
        points = [(t, now)]
        left = 0.0  # viewers who left in the last exit
        for phase in self.phases:
            if phase.kind == "ramp":
                end = float(phase.to)
            elif phase.kind == "flash":
                end = now + phase.add
            elif phase.kind == "exit":
                left = math.floor(now * phase.fraction)
                end = now - left
            elif phase.kind == "return":
                end = now + math.floor(left * phase.fraction)
            else:
                end = now
            t += phase.duration_s
            points.append((t, end))
            now = end
        return points

    def viewers_at(self, t: float) -> int:
        """Target concurrent viewers ``t`` seconds into the run (0 after the end)."""
        points = self.breakpoints()
        if t < 0 or t > points[-1][0]:
            return 0
        for (t0, v0), (t1, v1) in itertools.pairwise(points):
            if t <= t1:
                if t1 == t0:
                    return round(v1)
                return round(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
        return round(points[-1][1])

    @property
    def peak_viewers(self) -> int:
        return round(max(v for _, v in self.breakpoints()))

    def labels(self) -> list[tuple[float, str]]:
        """``(start_s, label)`` of every labelled phase, for the report's time axis."""
        out, t = [], 0.0
        for phase in self.phases:
            if phase.label:
                out.append((t, phase.label))
            t += phase.duration_s
        return out

    def scaled(self, viewers: float = 1.0, time: float = 1.0) -> Scenario:
        """The same shape with viewer counts times ``viewers`` and durations times ``time``."""
        phases = tuple(
            Phase(
                p.kind,
                p.duration_s * time,
                round(p.to * viewers),
                round(p.add * viewers),
                p.fraction,
                p.label,
            )
            for p in self.phases
        )
        chaos = tuple(
            ChaosEvent(
                c.at_s * time,
                c.action,
                c.target,
                c.duration_s * time,
                c.match,
                c.error,
                c.error_rate,
                c.latency_s,
            )
            for c in self.chaos
        )
        return Scenario(
            self.name,
            self.description,
            phases,
            self.devices,
            chaos,
            self.player,
            round(self.start_viewers * viewers),
            self.experiment,
        )


def device_for(scenario: Scenario, index: int) -> Device:
    """The device of player ``index``: a deterministic interleaving by the shares."""
    position = (index * 0.6180339887498949) % 1.0  # golden-ratio sequence: evenly spread
    acc = 0.0
    for device in scenario.devices:
        acc += device.share
        if position < acc:
            return device
    return scenario.devices[-1]
