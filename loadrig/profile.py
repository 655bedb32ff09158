"""Load profiles: the TOML file format, its parser and validator, and the viewer curve.

A profile is a sequence of **phases** that shape the number of concurrent viewers over
time, a **device mix** (which ladder rungs viewers can reach), a **chaos schedule** and
a few player settings.  Everything here is pure: :func:`parse_profile` turns TOML text
into a validated :class:`Profile` or raises :class:`ProfileError` naming the field
(``phase[2].to: ...``), and :meth:`Profile.viewers_at` is the target curve the
scheduler follows.

Phase kinds (each lasts ``duration_s``, curves are linear within a phase):

- ``ramp``   ``to`` viewers by the end of the phase (up or down)
- ``hold``   keep the current number
- ``flash``  ``add`` viewers arrive within the phase (a flash crowd: at most 60 s)
- ``exit``   ``fraction`` of the current viewers leave (a mass exit)
- ``return`` ``fraction`` of those who left in the last ``exit`` come back

Chaos actions: ``kill`` / ``pause`` (SIGSTOP, SIGCONT after ``duration_s``) a stack
process by ``target`` name, ``restart-redis``, ``fault`` (a gRPC fault rule through the
resilience layer's fault file, cleared after ``duration_s`` when given).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHASE_KINDS = ("ramp", "hold", "flash", "exit", "return")
CHAOS_ACTIONS = ("kill", "pause", "restart-redis", "fault")
FLASH_MAX_S = 60.0
GRPC_CODES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


class ProfileError(ValueError):
    """A profile that cannot run; the message names the offending field."""


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
class Profile:
    name: str
    description: str
    phases: tuple[Phase, ...]
    devices: tuple[Device, ...]
    chaos: tuple[ChaosEvent, ...] = ()
    player: PlayerSettings = field(default_factory=PlayerSettings)
    start_viewers: int = 0

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

    def scaled(self, viewers: float = 1.0, time: float = 1.0) -> Profile:
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
        return Profile(
            self.name,
            self.description,
            phases,
            self.devices,
            chaos,
            self.player,
            round(self.start_viewers * viewers),
        )


# -- parsing --------------------------------------------------------------------------------


def _number(
    where: str,
    raw: dict[str, Any],
    key: str,
    default: float | None = None,
    *,
    low: float = 0.0,
    high: float = math.inf,
    strict_low: bool = False,
) -> float:
    if key not in raw:
        if default is None:
            raise ProfileError(f"{where}.{key}: required")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{where}.{key}: must be a number, got {value!r}")
    if value < low or (strict_low and value == low) or value > high:
        bound = f"> {low}" if strict_low else f">= {low}"
        upper = "" if high == math.inf else f" and <= {high}"
        raise ProfileError(f"{where}.{key}: must be {bound}{upper}, got {value!r}")
    return float(value)


def _text(where: str, raw: dict[str, Any], key: str, default: str | None = None) -> str:
    if key not in raw:
        if default is None:
            raise ProfileError(f"{where}.{key}: required")
        return default
    if not isinstance(raw[key], str):
        raise ProfileError(f"{where}.{key}: must be a string, got {raw[key]!r}")
    return str(raw[key])


def _only(where: str, raw: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ProfileError(
            f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})"
        )


def _phase(i: int, raw: dict[str, Any]) -> Phase:
    where = f"phase[{i}]"
    kind = _text(where, raw, "kind")
    if kind not in PHASE_KINDS:
        raise ProfileError(f"{where}.kind: must be one of {', '.join(PHASE_KINDS)}, got {kind!r}")
    extra = {"ramp": {"to"}, "flash": {"add"}, "exit": {"fraction"}, "return": {"fraction"}}
    _only(where, raw, {"kind", "duration_s", "label"} | extra.get(kind, set()))
    duration = _number(where, raw, "duration_s", strict_low=kind != "hold")
    if kind == "flash" and duration > FLASH_MAX_S:
        raise ProfileError(
            f"{where}.duration_s: a flash crowd arrives within {FLASH_MAX_S:g} s, got {duration:g}"
        )
    to = add = 0
    fraction = 0.0
    if kind == "ramp":
        to = int(_number(where, raw, "to"))
    elif kind == "flash":
        add = int(_number(where, raw, "add", low=1))
    elif kind in ("exit", "return"):
        fraction = _number(where, raw, "fraction", low=0.0, high=1.0, strict_low=True)
    return Phase(kind, duration, to, add, fraction, _text(where, raw, "label", ""))


def _device(i: int, raw: dict[str, Any]) -> Device:
    where = f"device[{i}]"
    _only(where, raw, {"name", "share", "max_rung", "bandwidth_kbps"})
    return Device(
        _text(where, raw, "name"),
        _number(where, raw, "share", low=0.0, high=1.0, strict_low=True),
        _text(where, raw, "max_rung", ""),
        _number(where, raw, "bandwidth_kbps", 0.0),
    )


def _chaos(i: int, raw: dict[str, Any], duration: float) -> ChaosEvent:
    where = f"chaos[{i}]"
    action = _text(where, raw, "action")
    if action not in CHAOS_ACTIONS:
        raise ProfileError(
            f"{where}.action: must be one of {', '.join(CHAOS_ACTIONS)}, got {action!r}"
        )
    fields = {"at_s", "action"} | {
        "kill": {"target"},
        "pause": {"target", "duration_s"},
        "restart-redis": set(),
        "fault": {"duration_s", "match", "error", "error_rate", "latency_s"},
    }[action]
    _only(where, raw, fields)
    at = _number(where, raw, "at_s", high=duration)
    target = _text(where, raw, "target") if action in ("kill", "pause") else ""
    hold = _number(where, raw, "duration_s", 0.0)
    if action == "pause" and hold <= 0:
        raise ProfileError(f"{where}.duration_s: a pause needs a duration > 0")
    error = _text(where, raw, "error", "")
    if error and error not in GRPC_CODES:
        raise ProfileError(f"{where}.error: not a gRPC status code name: {error!r}")
    rate = _number(where, raw, "error_rate", 1.0 if error else 0.0, high=1.0)
    latency = _number(where, raw, "latency_s", 0.0)
    if action == "fault" and not error and latency == 0:
        raise ProfileError(f"{where}: a fault needs an error or a latency_s")
    return ChaosEvent(
        at, action, target, hold, _text(where, raw, "match", "*"), error, rate, latency
    )


def _player(raw: dict[str, Any]) -> PlayerSettings:
    where = "player"
    d = PlayerSettings()
    _only(where, raw, set(PlayerSettings.__dataclass_fields__))
    audio = raw.get("audio", d.audio)
    if not isinstance(audio, bool):
        raise ProfileError(f"{where}.audio: must be true or false, got {audio!r}")
    return PlayerSettings(
        live_delay_s=_number(where, raw, "live_delay_s", d.live_delay_s, strict_low=True),
        start_buffer_s=_number(where, raw, "start_buffer_s", d.start_buffer_s),
        resume_buffer_s=_number(where, raw, "resume_buffer_s", d.resume_buffer_s),
        catchup_rate=_number(where, raw, "catchup_rate", d.catchup_rate, low=1.0, high=2.0),
        audio=audio,
        accounts=int(_number(where, raw, "accounts", d.accounts, low=1)),
        signin_share=_number(where, raw, "signin_share", d.signin_share, high=1.0),
        content=_text(where, raw, "content", d.content),
        segment_timeout_s=_number(
            where, raw, "segment_timeout_s", d.segment_timeout_s, strict_low=True
        ),
    )


def parse_profile(text: str, default_name: str = "profile") -> Profile:
    """A validated profile from TOML text; :class:`ProfileError` names what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}") from exc
    _only(
        "profile",
        raw,
        {"name", "description", "start_viewers", "phase", "device", "chaos", "player"},
    )
    phases_raw = raw.get("phase")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ProfileError("phase: at least one [[phase]] is required")
    phases = tuple(_phase(i, p) for i, p in enumerate(phases_raw))
    devices_raw = raw.get("device", [{"name": "any", "share": 1.0}])
    if not isinstance(devices_raw, list) or not devices_raw:
        raise ProfileError("device: give [[device]] tables or none")
    devices = tuple(_device(i, d) for i, d in enumerate(devices_raw))
    total = sum(d.share for d in devices)
    if abs(total - 1.0) > 1e-6:
        raise ProfileError(f"device: shares must add up to 1, they add up to {total:g}")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ProfileError("device: names must be unique")
    player = _player(raw.get("player", {}))
    profile = Profile(
        name=_text("profile", raw, "name", default_name),
        description=_text("profile", raw, "description", ""),
        phases=phases,
        devices=devices,
        player=player,
        start_viewers=int(_number("profile", raw, "start_viewers", 0.0)),
    )
    duration = profile.duration_s
    if duration <= 0:
        raise ProfileError("phase: the phases last 0 s in total")
    chaos = tuple(_chaos(i, c, duration) for i, c in enumerate(raw.get("chaos", [])))
    for i, event in enumerate(chaos):
        if event.at_s + event.duration_s > duration:
            raise ProfileError(
                f"chaos[{i}].duration_s: ends at {event.at_s + event.duration_s:g}"
                f" s, after the profile's {duration:g} s"
            )
    return Profile(
        profile.name,
        profile.description,
        phases,
        devices,
        tuple(sorted(chaos, key=lambda e: e.at_s)),
        player,
        profile.start_viewers,
    )


PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


def load_profile(name_or_path: str) -> Profile:
    """A profile from a file path, or by name from ``loadrig/profiles/``."""
    path = Path(name_or_path)
    if not path.exists():
        path = PROFILES_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise ProfileError(f"no profile {name_or_path!r} (ready ones: {known})")
    try:
        return parse_profile(path.read_text(), path.stem)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from exc


def device_for(profile: Profile, index: int) -> Device:
    """The device of player ``index``: a deterministic interleaving by the shares."""
    position = (index * 0.6180339887498949) % 1.0  # golden-ratio sequence: evenly spread
    acc = 0.0
    for device in profile.devices:
        acc += device.share
        if position < acc:
            return device
    return profile.devices[-1]
