"""QoE demotion: the hysteresis policy, the health record's reading, the ranking's use."""

from __future__ import annotations

from livemesh.registry.v1 import registry_pb2 as rpb
from services.playback.qoe_demotion import (
    Demoter,
    DemotionPolicy,
    Health,
    State,
    Verdict,
    instance_edge,
    steering_order,
)
from services.playback.qoe_health import parse_health
from services.playback.steering import RankingCache, rank_edges

POLICY = DemotionPolicy(demote_below=0.6, restore_above=0.8, hold_s=5, max_hold_s=20)
E = "instances/e1"


class Run:
    """Feeds a Demoter one read per second, each of a new window (or of the last one)."""

    def __init__(self) -> None:
        self.demoter = Demoter(POLICY)
        self.now = 0.0
        self.verdict = Verdict()

    def read(
        self, score: float | None, requests: int = 50, again: bool = False, sessions: int = 8
    ) -> frozenset[str]:
        window = int(self.now) - again
        health = None if score is None else Health(score, requests, window, sessions)
        self.verdict = self.demoter.observe({E: health}, self.now)
        self.now += 1
        return self.verdict.demoted

    def reads(
        self, seconds: int, score: float | None, requests: int = 50, sessions: int = 8
    ) -> list[bool]:
        return [E in self.read(score, requests, sessions=sessions) for _ in range(seconds)]


def test_a_bad_window_demotes_at_once_and_scores_between_the_lines_do_not_restore() -> None:
    run = Run()
    assert run.reads(3, 0.95) == [False] * 3
    assert run.read(0.4) == {E}
    assert run.reads(30, 0.7) == [True] * 30  # above demote_below, below restore_above


def test_a_demoted_edge_is_restored_after_a_hold_of_good_windows() -> None:
    run = Run()
    run.read(0.3)
    good = run.reads(8, 0.9)
    assert good[:5] == [True] * 5  # first good read at t=1: restored 5 s later
    assert good[5:] == [False] * 3
    assert run.demoter.edges[E].strikes == 0


def test_near_the_line_it_does_not_flap() -> None:
    """Scores wandering across the demotion line but never reaching the restore line:
    one demotion, not one per crossing."""
    run = Run()
    states = [E in run.read(score) for score in [0.9, 0.55, 0.65, 0.58, 0.7, 0.59, 0.75] * 4]
    assert states[0] is False
    assert all(states[1:])
    assert run.demoter.edges[E].strikes == 1


def test_a_thin_window_says_nothing() -> None:
    run = Run()
    assert run.reads(5, 0.0, requests=POLICY.min_requests - 1) == [False] * 5
    # nor do many requests of too few viewers (one player's slow start is no verdict)
    assert run.reads(5, 0.0, requests=500, sessions=POLICY.min_sessions - 1) == [False] * 5
    assert run.read(0.0, sessions=POLICY.min_sessions) == {E}


def test_a_silent_demoted_edge_goes_on_probation_and_strikes_double_its_hold() -> None:
    run = Run()
    run.read(0.2)
    # its viewers left: no window at all; after the hold it gets viewers again
    assert run.reads(5, None) == [True] * 4 + [False]
    assert run.demoter.edges[E].state is State.PROBATION
    assert run.verdict.probation == {E} and run.verdict.off_steering == {E}
    # still bad: out again, for twice as long (10 s), then probation again
    assert run.read(0.2) == {E}
    assert run.reads(10, None) == [True] * 9 + [False]
    run.read(0.2)
    run.read(0.2, again=True)  # (the same window read twice is one piece of evidence)
    assert run.demoter.edges[E].strikes == 3
    assert run.reads(21, None) == [True] * 18 + [False] * 3  # 20 s (max_hold_s) after it
    # recovered: a good window on probation makes it healthy, and the strikes start again
    assert run.read(0.95) == frozenset()
    assert run.demoter.edges[E].state is State.HEALTHY and not run.verdict.off_steering
    assert run.demoter.edges[E].strikes == 0


def test_bad_reports_from_viewers_still_there_keep_it_out() -> None:
    run = Run()
    assert run.reads(60, 0.3) == [True] * 60


def test_an_edge_gone_from_the_registry_is_forgotten() -> None:
    demoter = Demoter(POLICY)
    assert demoter.observe({E: Health(0.1, 50, 0, 8)}, 0).demoted == {E}
    assert demoter.observe({"instances/e2": None}, 1) == Verdict()
    assert E not in demoter.edges


def test_the_health_record_is_read_while_fresh() -> None:
    record = {b"score": b"0.5", b"requests": b"40", b"window": b"100", b"window_s": b"5"}
    record[b"sessions"] = b"4"
    assert parse_health(record, 106.5) == Health(0.5, 40, 100, 4)  # as written, 1-2 s after
    assert parse_health(record, 108.9) == Health(0.5, 40, 100, 4)
    assert parse_health(record, 109.1) is None  # the processor has stopped sliding it
    assert parse_health({k: v for k, v in record.items() if k != b"window_s"}, 106) is None
    assert parse_health({}, 102) is None
    assert parse_health({**record, b"score": b"nan?"}, 102) is None


def test_names_and_steering_lists() -> None:
    assert instance_edge("instances/edge-1") == "edge-1"
    verdict = Verdict(demoted=frozenset({"a"}), probation=frozenset({"c"}))
    assert steering_order(["a", "b", "c"], verdict) == ["b"]
    assert steering_order(["a", "c"], verdict) == ["a", "c"]  # never an empty answer


def edge(name: str, load: float = 0.1) -> rpb.Instance:
    return rpb.Instance(
        name=f"instances/{name}",
        address=f"http://{name}.test:8080",
        region="eu-west",
        health=rpb.HEALTH_SERVING,
        load=load,
    )


def test_ranking_puts_the_demoted_last_and_a_cached_ranking_follows_demotions() -> None:
    edges = [edge("e1", 0.0), edge("e2", 0.5), edge("e3", 0.9)]
    assert rank_edges(edges, "eu-west", "demo")[0].name == "instances/e1"
    ranked = rank_edges(edges, "eu-west", "demo", {"instances/e1"})
    assert [e.name for e in ranked] == ["instances/e2", "instances/e3", "instances/e1"]
    cache = RankingCache()
    assert cache.ranked(edges, "eu-west", "demo")[0].name == "instances/e1"
    demoted = frozenset({"instances/e1"})
    assert cache.ranked(edges, "eu-west", "demo", demoted)[0].name == "instances/e2"
    assert cache.ranked(edges, "eu-west", "demo")[0].name == "instances/e1"
