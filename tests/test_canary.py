"""``livemesh canary`` on real processes: a baseline registry, a canary registry started by
the command, and callers going through the resilience layer with the split file, on
loopback. A bad version is rolled back within 60 s, gets under 1 % of the calls, and no
caller sees an error; a good one is promoted."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from command.canary import Outcome, Plan, parse, run
from command.canary_analysis import Thresholds, Verdict
from kernel.ports import free_port
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.resilience.faults import FaultRule
from kernel.rpc.resilience.split import SPLIT_FILE_ENV, read_split
from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc

SERVICE = "registry"
# the bad version's faults hit the service's own methods, not its health checks: a version
# that failed those would be left out by every balancer's health checking before any analysis
METHODS = "livemesh.registry.v1.RegistryService"
PACE_S = 0.01  # each of 4 callers: at most 100 calls/s


@dataclass
class Baseline:
    address: str
    metrics: str


@pytest.fixture
async def baseline(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Baseline]:
    """The baseline version: ``livemesh registry`` as its own process.

    Both versions run without the load shedder (the canary inherits this environment): on
    two cores shared with the rest of the suite it sheds a call now and then whatever the
    canary does, and shedding has tests of its own; here a caller's error must mean the
    canary reached a caller."""
    monkeypatch.setenv("LIVEMESH_LOAD_SHEDDING", "off")
    metrics_port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "command.cli",
        SERVICE,
        "--port",
        "0",
        "--metrics-port",
        str(metrics_port),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = (await process.stdout.readline()).decode().strip()
    name, _, address = line.partition(": ")
    assert name == SERVICE, line
    yield Baseline(address, f"http://127.0.0.1:{metrics_port}/metrics")
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        await process.wait()


@dataclass
class Callers:
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by status code and detail


async def call_until(stop: asyncio.Event, target: str, callers: Callers, workers: int) -> None:
    """``workers`` callers, each calling ListInstances through the layer every
    :data:`PACE_S` until ``stop`` (paced below what the shared machine serves, so the
    baseline's load shedder stays out of it); an error reaching a caller is counted."""
    factory = RpcChannelFactory(tls=None)
    stub = registry_pb2_grpc.RegistryServiceStub(factory.channel(target))  # type: ignore[no-untyped-call]
    request = registry_pb2.ListInstancesRequest(service="edge")

    async def caller() -> None:
        while not stop.is_set():
            callers.calls += 1
            try:
                await stub.ListInstances(request, timeout=2.0)
            except grpc.aio.AioRpcError as error:
                callers.errors[f"{error.code().name}: {error.details()}"] += 1
            await asyncio.sleep(PACE_S)  # the pace of one caller, not a wait for an event

    try:
        await asyncio.gather(*(caller() for _ in range(workers)))
    finally:
        await factory.close()


async def canary_under_load(
    baseline: Baseline, split_file: Path, faults: tuple[FaultRule, ...], limits: Thresholds
) -> tuple[Outcome, Callers]:
    plan = Plan(
        SERVICE,
        baseline.address,
        baseline.metrics,
        str(split_file),
        weight=0.005,
        interval_s=1.0,
        faults=faults,
        limits=limits,
    )
    callers, stop = Callers(), asyncio.Event()
    load = asyncio.create_task(call_until(stop, baseline.address, callers, workers=4))
    try:
        outcome, canary = await run(plan)
        # the callers go on past the verdict: a rollback must not fail a call either
        await asyncio.sleep(1.0)  # a second more of load (a duration, not a wait for an event)
    finally:
        stop.set()
        await load
    if outcome.verdict is Verdict.PROMOTE:
        await canary.stop()
    return outcome, callers


@pytest.fixture
def split_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "split.json"
    monkeypatch.setenv(SPLIT_FILE_ENV, str(path))
    return path


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (FaultRule(METHODS, error="UNAVAILABLE", error_rate=1.0), "error rate"),
        (FaultRule(METHODS, latency_s=0.2), "latency"),
    ],
    ids=["errors", "latency"],
)
async def test_a_bad_version_is_rolled_back_unseen_by_callers(
    baseline: Baseline, split_file: Path, bad: FaultRule, why: str
) -> None:
    outcome, callers = await canary_under_load(baseline, split_file, (bad,), Thresholds())
    assert outcome.verdict is Verdict.ROLLBACK, outcome.analysis
    assert why in outcome.analysis.reason, (callers, outcome)
    assert outcome.removed_s < 60
    # every call that reached the canary, however it ended (a hedge's loser too)
    reached, served = sum(outcome.canary.buckets), sum(outcome.baseline.buckets)
    assert reached / (reached + served) < 0.01, (outcome.canary, outcome.baseline)
    print(  # the figures reported
        f"canary ({why}): rolled back {outcome.removed_s:.1f} s after it joined, "
        f"{reached} of {reached + served} calls reached it ({reached / (reached + served):.2%}), "
        f"{callers.calls} callers' calls, {sum(callers.errors.values())} errors"
    )
    assert callers.calls > 1000
    assert not callers.errors
    assert read_split(str(split_file)) == {baseline.address: {}}


async def test_a_good_version_is_promoted(baseline: Baseline, split_file: Path) -> None:
    limits = Thresholds(min_pass_calls=10, min_pass_s=5.0)
    outcome, callers = await canary_under_load(baseline, split_file, (), limits)
    assert outcome.verdict is Verdict.PROMOTE, outcome.analysis
    assert outcome.canary.calls >= 10
    assert not callers.errors
    (weight,) = read_split(str(split_file))[baseline.address].values()
    assert weight == 1.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--weight", "0"], "--weight must be in (0, 1]"),
        (["--interval-s", "5", "--max-s", "1"], "--interval-s must be positive"),
    ],
)
def test_a_bad_plan_exits_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    needed = ["--dependency", "a:1", "--baseline-metrics", "http://a:2/metrics"]
    with pytest.raises(SystemExit) as exit_:
        parse([SERVICE, *needed, "--split-file", "s.json", *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_version_is_made_of_fault_rules_on_the_named_methods() -> None:
    needed = ["--dependency", "a:1", "--baseline-metrics", "http://a:2/metrics"]
    plan = parse([SERVICE, *needed, "--split-file", "s.json", "--bad-error", "INTERNAL"])
    assert plan.faults == (FaultRule("*", error="INTERNAL", error_rate=1.0),)
    assert plan.limits.max_looks == 60
