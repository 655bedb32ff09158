"""loadrig.scenario: the TOML format, its validation errors and the viewer curve (no sockets)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from loadrig.scenario import device_for
from loadrig.scenario_file import (
    SCENARIOS_DIR,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

BASE = """
name = "t"
start_viewers = 10
[[phase]]
kind = "ramp"
to = 110
duration_s = 10
[[phase]]
kind = "hold"
duration_s = 5
[[phase]]
kind = "flash"
add = 900
duration_s = 1
label = "main event"
[[phase]]
kind = "exit"
fraction = 0.8
duration_s = 4
[[phase]]
kind = "return"
fraction = 0.5
duration_s = 10
"""


def test_the_curve_follows_the_phases() -> None:
    scenario = parse_scenario(BASE)
    assert scenario.duration_s == 30
    assert scenario.breakpoints() == [
        (0.0, 10.0), (10.0, 110.0), (15.0, 110.0), (16.0, 1010.0), (20.0, 202.0), (30.0, 606.0)
    ]  # fmt: skip
    assert scenario.viewers_at(0) == 10
    assert scenario.viewers_at(5) == 60  # halfway up the ramp
    assert scenario.viewers_at(12) == 110
    assert scenario.viewers_at(15.5) == 560  # halfway through the flash crowd
    assert scenario.viewers_at(18) == 606  # halfway through the exit (1010 -> 202)
    assert scenario.viewers_at(31) == 0  # the run is over
    assert scenario.peak_viewers == 1010
    assert scenario.labels() == [(15.0, "main event")]
    assert scenario.devices[0].name == "any" and scenario.devices[0].share == 1.0


def test_scaling_keeps_the_shape() -> None:
    scenario = parse_scenario(BASE).scaled(viewers=0.1, time=2.0)
    assert scenario.duration_s == 60
    assert scenario.breakpoints()[2] == (30.0, 11.0)
    assert scenario.peak_viewers == 101


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('[[phase]]\nkind = "surge"\nduration_s = 1', "phase[0].kind: must be one of"),
        ('[[phase]]\nkind = "ramp"\nduration_s = 5', "phase[0].to: required"),
        ('[[phase]]\nkind = "ramp"\nto = 5\nduration_s = -1', "phase[0].duration_s: must be > 0"),
        ('[[phase]]\nkind = "flash"\nadd = 5\nduration_s = 120', "phase[0].duration_s: a flash"),
        ('[[phase]]\nkind = "exit"\nfraction = 1.5\nduration_s = 1', "phase[0].fraction: must be"),
        ('[[phase]]\nkind = "hold"\nduration_s = 1\nto = 3', "phase[0].to: unknown field"),
        ('[[phase]]\nkind = "ramp"\nto = "lots"\nduration_s = 1', "phase[0].to: must be a number"),
        ("name = 'x'", "phase: at least one [[phase]] is required"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_phases_name_the_field(snippet: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(snippet)


HOLD = '[[phase]]\nkind = "hold"\nduration_s = 10\n'
EXPERIMENT = """[experiment]
decision = "live-delay"
display_name = "Live delay"
[[experiment.cell]]
name = "a"
weight = 1
value = "1000"
"""


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('[[device]]\nname = "tv"\nshare = 0.5', "device: shares must add up to 1"),
        ('[[device]]\nname = "tv"\nshare = 1.0\ncolour = "red"', r"device\[0\].colour: unknown"),
        ('[[chaos]]\nat_s = 20\naction = "kill"\ntarget = "edge-1"', r"chaos\[0\].at_s: must be"),
        ('[[chaos]]\nat_s = 2\naction = "nuke"', r"chaos\[0\].action: must be one of"),
        ('[[chaos]]\nat_s = 2\naction = "kill"', r"chaos\[0\].target: required"),
        ('[[chaos]]\nat_s = 2\naction = "pause"\ntarget = "shield"', "needs a duration"),
        ('[[chaos]]\nat_s = 8\naction = "pause"\ntarget = "x"\nduration_s = 5', "after the"),
        ('[[chaos]]\nat_s = 2\naction = "fault"\nerror = "BROKEN"', "not a gRPC status code"),
        ('[[chaos]]\nat_s = 2\naction = "fault"', "needs an error or a latency_s"),
        ("[player]\naudio = 1", r"player.audio: must be true or false"),
        ("[player]\nlive_delay_s = 0", r"player.live_delay_s: must be > 0"),
        ('[experiment]\ndecision = "d"\ndisplay_name = "D"', r"experiment.cell: at least two"),
        (
            EXPERIMENT + "[[experiment.cell]]\nname = 'b'\nweight = 0\nvalue = '1'",
            r"weight: must be >= 1",
        ),
        (
            EXPERIMENT + "[[experiment.cell]]\nname = 'a'\nweight = 1\nvalue = '1'",
            "names must be unique",
        ),
        (
            EXPERIMENT + "[[experiment.cell]]\nname = 'b'\nweight = 1.5\nvalue = '1'",
            "a whole number",
        ),
        ('[experiment]\ndecision = "d"\nsalt = "x"', r"experiment.salt: unknown field"),
    ],
)
def test_bad_devices_chaos_and_player_settings_name_the_field(snippet: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(HOLD + snippet)


def test_chaos_is_sorted_and_fault_rate_defaults_to_every_call() -> None:
    scenario = parse_scenario(
        HOLD + '[[chaos]]\nat_s = 5\naction = "restart-redis"\n'
        '[[chaos]]\nat_s = 1\naction = "fault"\nerror = "UNAVAILABLE"\nduration_s = 2\n'
    )
    assert [c.action for c in scenario.chaos] == ["fault", "restart-redis"]
    assert scenario.chaos[0].error_rate == 1.0 and scenario.chaos[0].match == "*"


def test_device_mix_follows_the_shares() -> None:
    scenario = parse_scenario(
        HOLD + '[[device]]\nname = "tv"\nshare = 0.25\n[[device]]\nname = "phone"\nshare = 0.75\n'
    )
    picks = [device_for(scenario, i).name for i in range(1000)]
    assert abs(picks.count("tv") - 250) <= 5
    assert picks[:8].count("tv") in (1, 2, 3)  # interleaved, not in blocks


def test_every_ready_scenario_loads_and_fight_night_has_its_shape() -> None:
    names = sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))
    assert {"fight-night", "flash-crowd", "halftime", "smoke"} <= set(names)
    for name in names:
        load_scenario(name)
    fight = load_scenario("fight-night")
    points = fight.breakpoints()
    surge = [(t1 - t0, v1 / v0) for (t0, v0), (t1, v1) in pairwise(points) if v1 > v0]
    assert any(span <= 60 and growth >= 10 for span, growth in surge)  # 10x within a minute
    exits = [p for p in fight.phases if p.kind == "exit"]
    assert exits and exits[0].fraction >= 0.5
    with pytest.raises(ScenarioError, match="no scenario 'nope'"):
        load_scenario("nope")


def test_an_experiment_keeps_its_cells_in_order_when_scaled() -> None:
    text = HOLD + EXPERIMENT + "[[experiment.cell]]\nname = 'b'\nweight = 3\nvalue = '500'\n"
    plan = parse_scenario(text).scaled(viewers=2.0, time=0.5).experiment
    assert plan is not None and plan.decision == "live-delay"
    assert [(c.name, c.weight, c.value) for c in plan.cells] == [("a", 1, "1000"), ("b", 3, "500")]
    assert parse_scenario(HOLD).experiment is None
