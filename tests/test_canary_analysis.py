"""The canary's verdict (pure): rollback on more failures or slower calls than the
baseline, promotion once enough calls show neither, no verdict on too little evidence."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from command.canary import read_window, since
from command.canary_analysis import Thresholds, Verdict, Window, analyse, error_test

BOUNDS = [0.001, 0.01, 0.1, 1.0]


def window(ok: int, failed: int = 0, buckets: list[int] | None = None) -> Window:
    """``ok`` + ``failed`` calls; by default all in the fastest bucket."""
    return Window({"OK": ok, "UNAVAILABLE": failed}, buckets or [ok + failed, 0, 0, 0, 0])


def test_a_failing_canary_is_rolled_back_after_a_handful_of_calls() -> None:
    result = analyse(window(2000), window(0, 5), BOUNDS, elapsed_s=3, look=3)
    assert result.verdict is Verdict.ROLLBACK
    assert "error rate 5/5" in result.reason
    assert result.error_p is not None and result.error_p < 1e-10


def test_a_canary_failing_as_often_as_the_baseline_is_not_rolled_back() -> None:
    result = analyse(window(1900, 100), window(19, 1), BOUNDS, elapsed_s=3, look=3)
    assert result.verdict is Verdict.CONTINUE
    assert result.error_p is not None and result.error_p > 0.3


def test_a_significant_but_tiny_excess_of_failures_is_within_the_margin() -> None:
    # 0.5 % more failures, with so many calls that the test alone would flag it
    baseline, canary = window(1_000_000, 0), window(199_000, 1000)
    assert error_test(baseline, canary) < 1e-10
    result = analyse(baseline, canary, BOUNDS, elapsed_s=30, look=30)
    assert result.verdict is Verdict.PROMOTE


def test_a_slow_canary_is_rolled_back_on_latency() -> None:
    slow = Window({"OK": 8}, [0, 0, 0, 8, 0])
    result = analyse(window(2000), slow, BOUNDS, elapsed_s=4, look=4)
    assert result.verdict is Verdict.ROLLBACK
    assert "latency" in result.reason
    assert result.latency_effect == 1.0


def test_a_slightly_slower_canary_is_within_the_effect_floor() -> None:
    # 15 % of the canary's calls in the slower bucket against 10 % of the baseline's:
    # significant with this many calls, but P(slower) + ties/2 is about 0.52
    baseline = Window({"OK": 10_000}, [9000, 1000, 0, 0, 0])
    canary = Window({"OK": 1000}, [850, 150, 0, 0, 0])
    result = analyse(baseline, canary, BOUNDS, elapsed_s=30, look=30)
    assert result.latency_p is not None and result.latency_p < 0.01
    assert result.latency_effect is not None and result.latency_effect < 0.6
    assert result.verdict is Verdict.PROMOTE


def test_promotion_waits_for_calls_and_time() -> None:
    few = analyse(window(2000), window(10), BOUNDS, elapsed_s=30, look=30)
    early = analyse(window(2000), window(40), BOUNDS, elapsed_s=5, look=5)
    ready = analyse(window(2000), window(40), BOUNDS, elapsed_s=10, look=10)
    assert (few.verdict, early.verdict, ready.verdict) == (
        Verdict.CONTINUE,
        Verdict.CONTINUE,
        Verdict.PROMOTE,
    )


def test_too_few_calls_by_the_last_look_is_a_rollback() -> None:
    result = analyse(window(2000), window(3), BOUNDS, elapsed_s=60, look=60)
    assert result.verdict is Verdict.ROLLBACK
    assert "too few" in result.reason


def test_the_false_alarm_rate_is_split_over_the_looks() -> None:
    # 2 failures in 5 against 0 in 100: p ~ 0.002, below alpha but not alpha / looks
    baseline, canary = window(100), window(3, 2)
    assert 0.001 < error_test(baseline, canary) < 0.01
    one_look = Thresholds(alpha=0.01, max_looks=1, min_pass_calls=1000)
    many = Thresholds(alpha=0.01, max_looks=60, min_pass_calls=1000)
    assert analyse(baseline, canary, BOUNDS, 1, 1, one_look).verdict is Verdict.ROLLBACK
    assert analyse(baseline, canary, BOUNDS, 1, 1, many).verdict is Verdict.CONTINUE


def test_cancelled_calls_are_not_judged() -> None:
    assert Window({"OK": 3, "CANCELLED": 4, "UNAVAILABLE": 1}, []).calls == 4


def test_a_servers_metrics_read_as_a_window_since_a_start() -> None:
    registry = CollectorRegistry()
    served = Counter("livemesh_rpc_served", "", ["method", "code"], registry=registry)
    seconds = Histogram(
        "livemesh_rpc_served_seconds", "", ["method"], buckets=BOUNDS, registry=registry
    )
    method, health = "/livemesh.x.v1.X/Get", "/grpc.health.v1.Health/Check"
    served.labels(method, "OK").inc(2)
    seconds.labels(method).observe(0.0005)
    seconds.labels(method).observe(0.0005)
    served.labels(health, "OK").inc(50)  # the balancers' checks: left out
    seconds.labels(health).observe(0.5)
    start, bounds = read_window(generate_latest(registry).decode())
    served.labels(method, "UNAVAILABLE").inc()
    seconds.labels(method).observe(0.05)
    now, _ = read_window(generate_latest(registry).decode())
    assert bounds == BOUNDS
    assert start == Window({"OK": 2}, [2, 0, 0, 0, 0])
    assert since(now, start) == Window({"OK": 0, "UNAVAILABLE": 1}, [0, 0, 1, 0, 0])
