"""Scenario files: TOML text to a validated :class:`Scenario`, by path or by name.

A scenario is written by hand, so every mistake is refused with the field that holds
it: :func:`parse_scenario` raises :class:`ScenarioError` naming it
(``phase[2].to: ...``), and :func:`load_scenario` adds the file's path.  The ready
scenarios live in ``loadrig/scenarios/``.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from kernel.defect_faults import DEFECT_KINDS
from loadrig.scenario import (
    ChaosEvent,
    Device,
    ExperimentCell,
    ExperimentPlan,
    Phase,
    PlayerSettings,
    Scenario,
)

PHASE_KINDS = ("ramp", "hold", "flash", "exit", "return")
CHAOS_ACTIONS = ("kill", "pause", "restart-redis", "fault", "defect")
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


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the offending field."""


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
            raise ScenarioError(f"{where}.{key}: required")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}.{key}: must be a number, got {value!r}")
    if value < low or (strict_low and value == low) or value > high:
        bound = f"> {low}" if strict_low else f">= {low}"
        upper = "" if high == math.inf else f" and <= {high}"
        raise ScenarioError(f"{where}.{key}: must be {bound}{upper}, got {value!r}")
    return float(value)


def _text(where: str, raw: dict[str, Any], key: str, default: str | None = None) -> str:
    if key not in raw:
        if default is None:
            raise ScenarioError(f"{where}.{key}: required")
        return default
    if not isinstance(raw[key], str):
        raise ScenarioError(f"{where}.{key}: must be a string, got {raw[key]!r}")
    return str(raw[key])


def _only(where: str, raw: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScenarioError(
            f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})"
        )


def _phase(i: int, raw: dict[str, Any]) -> Phase:
    where = f"phase[{i}]"
    kind = _text(where, raw, "kind")
    if kind not in PHASE_KINDS:
        raise ScenarioError(f"{where}.kind: must be one of {', '.join(PHASE_KINDS)}, got {kind!r}")
    extra = {"ramp": {"to"}, "flash": {"add"}, "exit": {"fraction"}, "return": {"fraction"}}
    _only(where, raw, {"kind", "duration_s", "label"} | extra.get(kind, set()))
    duration = _number(where, raw, "duration_s", strict_low=kind != "hold")
    if kind == "flash" and duration > FLASH_MAX_S:
        raise ScenarioError(
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
        raise ScenarioError(
            f"{where}.action: must be one of {', '.join(CHAOS_ACTIONS)}, got {action!r}"
        )
    fields = {"at_s", "action"} | {
        "kill": {"target"},
        "pause": {"target", "duration_s"},
        "restart-redis": set(),
        "fault": {"duration_s", "match", "error", "error_rate", "latency_s"},
        "defect": {"target", "duration_s", "match"},  # match: the kind of defect
    }[action]
    _only(where, raw, fields)
    at = _number(where, raw, "at_s", high=duration)
    target = _text(where, raw, "target") if action in ("kill", "pause", "defect") else ""
    hold = _number(where, raw, "duration_s", 0.0)
    if action in ("pause", "defect") and hold <= 0:
        raise ScenarioError(f"{where}.duration_s: a {action} needs a duration > 0")
    if action == "defect":
        if not target.startswith("pipeline-"):
            raise ScenarioError(f"{where}.target: a defect names a pipeline (pipeline-a)")
        if _text(where, raw, "match") not in DEFECT_KINDS:
            raise ScenarioError(f"{where}.match: one of {', '.join(DEFECT_KINDS)}")
    error = _text(where, raw, "error", "")
    if error and error not in GRPC_CODES:
        raise ScenarioError(f"{where}.error: not a gRPC status code name: {error!r}")
    rate = _number(where, raw, "error_rate", 1.0 if error else 0.0, high=1.0)
    latency = _number(where, raw, "latency_s", 0.0)
    if action == "fault" and not error and latency == 0:
        raise ScenarioError(f"{where}: a fault needs an error or a latency_s")
    return ChaosEvent(
        at, action, target, hold, _text(where, raw, "match", "*"), error, rate, latency
    )


def _player(raw: dict[str, Any]) -> PlayerSettings:
    where = "player"
    d = PlayerSettings()
    _only(where, raw, set(PlayerSettings.__dataclass_fields__))
    audio = raw.get("audio", d.audio)
    if not isinstance(audio, bool):
        raise ScenarioError(f"{where}.audio: must be true or false, got {audio!r}")
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


def _experiment(raw: object) -> ExperimentPlan:
    where = "experiment"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a table")
    _only(where, raw, {"decision", "display_name", "cell"})
    cells_raw = raw.get("cell")
    if not isinstance(cells_raw, list) or len(cells_raw) < 2:
        raise ScenarioError(f"{where}.cell: at least two [[experiment.cell]] (the control first)")
    cells = []
    for i, cell in enumerate(cells_raw):
        at = f"{where}.cell[{i}]"
        if not isinstance(cell, dict):
            raise ScenarioError(f"{at}: must be a table")
        _only(at, cell, {"name", "weight", "value"})
        weight = _number(at, cell, "weight", low=1)
        if weight != int(weight):
            raise ScenarioError(f"{at}.weight: must be a whole number, got {weight:g}")
        cells.append(ExperimentCell(_text(at, cell, "name"), int(weight), _text(at, cell, "value")))
    if len({c.name for c in cells}) != len(cells):
        raise ScenarioError(f"{where}.cell: names must be unique")
    return ExperimentPlan(
        _text(where, raw, "decision"), _text(where, raw, "display_name"), tuple(cells)
    )


def parse_scenario(text: str, default_name: str = "scenario") -> Scenario:
    """A validated scenario from TOML text; :class:`ScenarioError` names what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}") from exc
    _only(
        "scenario",
        raw,
        {
            "name",
            "description",
            "start_viewers",
            "phase",
            "device",
            "chaos",
            "player",
            "experiment",
        },
    )
    phases_raw = raw.get("phase")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ScenarioError("phase: at least one [[phase]] is required")
    phases = tuple(_phase(i, p) for i, p in enumerate(phases_raw))
    devices_raw = raw.get("device", [{"name": "any", "share": 1.0}])
    if not isinstance(devices_raw, list) or not devices_raw:
        raise ScenarioError("device: give [[device]] tables or none")
    devices = tuple(_device(i, d) for i, d in enumerate(devices_raw))
    total = sum(d.share for d in devices)
    if abs(total - 1.0) > 1e-6:
        raise ScenarioError(f"device: shares must add up to 1, they add up to {total:g}")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ScenarioError("device: names must be unique")
    player = _player(raw.get("player", {}))
    scenario = Scenario(
        name=_text("scenario", raw, "name", default_name),
        description=_text("scenario", raw, "description", ""),
        phases=phases,
        devices=devices,
        player=player,
        start_viewers=int(_number("scenario", raw, "start_viewers", 0.0)),
    )
    duration = scenario.duration_s
    if duration <= 0:
        raise ScenarioError("phase: the phases last 0 s in total")
    chaos = tuple(_chaos(i, c, duration) for i, c in enumerate(raw.get("chaos", [])))
    for i, event in enumerate(chaos):
        if event.at_s + event.duration_s > duration:
            raise ScenarioError(
                f"chaos[{i}].duration_s: ends at {event.at_s + event.duration_s:g}"
                f" s, after the scenario's {duration:g} s"
            )
    return Scenario(
        scenario.name,
        scenario.description,
        phases,
        devices,
        tuple(sorted(chaos, key=lambda e: e.at_s)),
        player,
        scenario.start_viewers,
        _experiment(raw["experiment"]) if "experiment" in raw else None,
    )


SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


def load_scenario(name_or_path: str) -> Scenario:
    """A scenario from a file path, or by name from ``loadrig/scenarios/``."""
    path = Path(name_or_path)
    if not path.exists():
        path = SCENARIOS_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml")))
        raise ScenarioError(f"no scenario {name_or_path!r} (ready ones: {known})")
    try:
        return parse_scenario(path.read_text(), path.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
