"""The experiment service on real gRPC servers over loopback, real Redis, SQLite and
PostgreSQL: allocation by hashing (deterministic, within 1% of the weights, the same in
every process), exposures, the sample-ratio check, guardrails that stop a harmful
experiment from the QoE stream, operator-only management, and field-naming refusals."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel import clock
from kernel.keys import QOE_EVENTS, experiment_session
from kernel.qoe_event import FIELD, QoeEvent, pack
from kernel.redis_server import redis_client
from kernel.rpc import credentials
from kernel.rpc.auth import SERVICE
from kernel.rpc.clients import RpcChannelFactory
from livemesh.experiments.v1 import experiments_pb2 as pb
from livemesh.experiments.v1 import experiments_pb2_grpc as pb_grpc
from services.experiments.allocation import cell_index
from services.experiments.cellqoe import CellQoeReader, cell_qoe, read_counts
from services.experiments.service import ExperimentService
from tests.conftest import bearer
from tests.db_helpers import fresh_postgres
from tests.services.conftest import Metadata, Presenting, Start, expect_error
from tests.services.test_service_processes import launch, stop

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = [f"accounts/a{i:05d}" for i in range(10_000)]
STOP_WAIT_S = 10.0
AT_ONCE = 8  # calls in flight (the adaptive limit starts at 20)
T = TypeVar("T")


@dataclass
class Plane:
    operator: pb_grpc.ExperimentServiceStub  # presenting an operator credential
    internal: pb_grpc.ExperimentServiceStub  # presenting a service credential
    raw: pb_grpc.ExperimentServiceStub  # presenting nothing
    service: ExperimentService
    target: str


MakePlane = Callable[[str], Awaitable[Plane]]


@pytest.fixture
def make_plane(
    start: Start,
    redis: aioredis.Redis,
    redis_url: str,
    operator_auth: Metadata,
    credential_key: Ed25519PrivateKey,
) -> MakePlane:
    async def made(database_url: str) -> Plane:
        service = ExperimentService(redis_url, database_url, guardrail_interval_s=0.05)
        running = await start(service)
        stub = pb_grpc.ExperimentServiceStub(grpc.aio.insecure_channel(running.target))
        internal = bearer(credentials.mint(credential_key, SERVICE, "playback"))
        return Plane(
            Presenting(stub, operator_auth),  # type: ignore[arg-type]
            Presenting(stub, internal),  # type: ignore[arg-type]
            stub,
            service,
            running.target,
        )

    return made


@pytest.fixture
async def plane(make_plane: MakePlane, database_url: str) -> Plane:
    return await make_plane(database_url)


def live_delay(
    *cells: tuple[str, int, str], guardrails: tuple[pb.Guardrail, ...] = ()
) -> pb.Experiment:
    experiment = pb.Experiment(display_name="Live delay", decision="live-delay")
    experiment.cells.extend(pb.Cell(name=n, weight=w, value=v) for n, w, v in cells)
    experiment.guardrails.extend(guardrails)
    return experiment


HALVES = (("control", 1, "1000"), ("fast", 1, "500"))


async def running(plane: Plane, experiment_id: str, experiment: pb.Experiment) -> pb.Experiment:
    await plane.operator.CreateExperiment(
        pb.CreateExperimentRequest(experiment_id=experiment_id, experiment=experiment)
    )
    reply = await plane.operator.StartExperiment(
        pb.StartExperimentRequest(name=f"experiments/{experiment_id}")
    )
    return reply.experiment


async def in_waves(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """The calls' answers, a few in flight at a time (more would meet the server's adaptive
    concurrency limit and be shed); a call starts when made, so each is made in its wave."""
    answers: list[T] = []
    for i in range(0, len(calls), AT_ONCE):
        answers.extend(await asyncio.gather(*(call() for call in calls[i : i + AT_ONCE])))
    return answers


async def assign_all(plane: Plane, accounts: list[str], **extra: str) -> list[str]:
    """Every account's cell for the live-delay decision."""
    replies = await in_waves(
        [
            functools.partial(
                plane.internal.AssignCell,
                pb.AssignCellRequest(decision="live-delay", account=a, **extra),
            )
            for a in accounts
        ]
    )
    assert all(r.in_experiment for r in replies)
    return [r.cell for r in replies]


async def test_allocation_is_deterministic_and_within_one_percent_of_the_weights(
    plane: Plane,
) -> None:
    experiment = await running(plane, "ld", live_delay(("control", 3, "1000"), ("fast", 1, "500")))
    cells = await assign_all(plane, ACCOUNTS)
    shares = {cell: n / len(ACCOUNTS) for cell, n in Counter(cells).items()}
    # each experiment draws a new salt, so the shares are a binomial draw: held to four
    # standard errors (0.017 at 10,000 accounts; a bias that size fails, chance ~1 in 16,000)
    bound = 4 * math.sqrt(0.75 * 0.25 / len(ACCOUNTS))
    assert abs(shares["control"] - 0.75) <= bound, shares
    assert abs(shares["fast"] - 0.25) <= bound, shares
    # asked again, every account lands where it did: the allocation is a function
    assert await assign_all(plane, ACCOUNTS[:1000]) == cells[:1000]
    # ... and its value is the cell's
    reply = await plane.internal.AssignCell(
        pb.AssignCellRequest(decision="live-delay", account=ACCOUNTS[0])
    )
    assert reply.value == {"control": "1000", "fast": "500"}[reply.cell]
    assert reply.experiment == experiment.name


def test_allocation_is_the_same_in_another_process_with_another_hash_seed() -> None:
    weights = [1, 2, 3]
    here = [cell_index("salt-1", a, weights) for a in ACCOUNTS[:500]]
    script = (
        "from services.experiments.allocation import cell_index\n"
        f"print([cell_index('salt-1', f'accounts/a{{i:05d}}', {weights}) for i in range(500)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    there = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert there.stdout.strip() == str(here)
    # another salt (another experiment) draws the cells anew
    other = [cell_index("salt-2", a, weights) for a in ACCOUNTS[:500]]
    assert sum(a != b for a, b in zip(here, other, strict=True)) > 100


async def test_two_instances_on_one_database_agree(
    make_plane: MakePlane, database_url: str
) -> None:
    first, second = await make_plane(database_url), await make_plane(database_url)
    await running(first, "ld", live_delay(*HALVES))
    accounts = ACCOUNTS[:400]
    assert await assign_all(first, accounts) == await assign_all(second, accounts)


async def test_no_running_experiment_means_the_default_and_a_stop_ends_allocation(
    plane: Plane,
) -> None:
    ask = pb.AssignCellRequest(decision="live-delay", account=ACCOUNTS[0])
    assert not (await plane.internal.AssignCell(ask)).in_experiment
    await running(plane, "ld", live_delay(*HALVES))
    assert (await plane.internal.AssignCell(ask)).in_experiment
    # one running experiment per decision
    await plane.operator.CreateExperiment(
        pb.CreateExperimentRequest(experiment_id="ld2", experiment=live_delay(*HALVES))
    )
    await expect_error(
        plane.operator.StartExperiment(pb.StartExperimentRequest(name="experiments/ld2")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    stopped = await plane.operator.StopExperiment(
        pb.StopExperimentRequest(name="experiments/ld", reason="done")
    )
    assert stopped.experiment.state == pb.EXPERIMENT_STATE_STOPPED
    assert stopped.experiment.stop_reason == "operator: done"
    assert not (await plane.internal.AssignCell(ask)).in_experiment
    # a retried start or stop finds it done; a stopped experiment never runs again
    again = await plane.operator.StopExperiment(
        pb.StopExperimentRequest(name="experiments/ld", reason="again")
    )
    assert again.experiment == stopped.experiment
    # ... and the decision is free for the next one
    await expect_error(
        plane.operator.StartExperiment(pb.StartExperimentRequest(name="experiments/ld")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    started = await plane.operator.StartExperiment(
        pb.StartExperimentRequest(name="experiments/ld2")
    )
    retried = await plane.operator.StartExperiment(
        pb.StartExperimentRequest(name="experiments/ld2")
    )
    assert retried.experiment == started.experiment
    listed = await plane.operator.ListExperiments(pb.ListExperimentsRequest(page_size=1))
    assert [e.name for e in listed.experiments] == ["experiments/ld"]
    rest = await plane.operator.ListExperiments(
        pb.ListExperimentsRequest(page_token=listed.next_page_token)
    )
    assert [(e.name, e.state) for e in rest.experiments] == [
        ("experiments/ld2", pb.EXPERIMENT_STATE_RUNNING)
    ]


async def test_the_readout_flags_a_sample_ratio_mismatch(plane: Plane) -> None:
    experiment = await running(plane, "ld", live_delay(*HALVES))
    accounts = ACCOUNTS[:2000]
    cells = await assign_all(plane, accounts)

    async def expose(which: list[tuple[str, str]]) -> None:
        await in_waves(
            [
                functools.partial(
                    plane.internal.LogExposure,
                    pb.LogExposureRequest(experiment=experiment.name, account=a, cell=c),
                )
                for a, c in which
            ]
        )

    # the treatment's exposures are logged for only half its accounts (a lossy client)
    fast = [(a, c) for a, c in zip(accounts, cells, strict=True) if c == "fast"]
    control = [(a, c) for a, c in zip(accounts, cells, strict=True) if c == "control"]
    await expose(control + fast[: len(fast) // 2])
    readout = await plane.operator.GetReadout(pb.GetReadoutRequest(name=experiment.name))
    by_cell = {c.cell: c for c in readout.cells}
    assert by_cell["control"].accounts == len(control)
    assert by_cell["fast"].accounts == len(fast) // 2
    assert readout.sample_ratio.mismatch and readout.sample_ratio.p_value < 0.001
    # the rest logged (and some accounts twice): the ratio is what the weights promise
    await expose(fast[len(fast) // 2 :] + control[:100])
    readout = await plane.operator.GetReadout(pb.GetReadoutRequest(name=experiment.name))
    assert {c.cell: c.accounts for c in readout.cells} == {
        "control": len(control),
        "fast": len(fast),
    }
    assert {c.cell: c.exposures for c in readout.cells}["control"] == len(control) + 100
    assert not readout.sample_ratio.mismatch, readout.sample_ratio


async def test_an_exposure_of_another_cell_is_refused_naming_the_cell(plane: Plane) -> None:
    experiment = await running(plane, "ld", live_delay(*HALVES))
    own = (
        await plane.internal.AssignCell(
            pb.AssignCellRequest(decision="live-delay", account=ACCOUNTS[0])
        )
    ).cell
    other = "fast" if own == "control" else "control"
    await expect_error(
        plane.internal.LogExposure(
            pb.LogExposureRequest(experiment=experiment.name, account=ACCOUNTS[0], cell=other)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cell",
    )


async def qoe_events(redis: aioredis.Redis, events: list[QoeEvent]) -> None:
    """Events into the QoE stream as edges write them (packed, 100 to an entry)."""
    for i in range(0, len(events), 100):
        lines = [e.encode() for e in events[i : i + 100]]
        await redis.xadd(QOE_EVENTS, {FIELD: pack(lines)})


def session_events(session: str, requests: int, starved: int, ttfb_ms: int) -> list[QoeEvent]:
    now = clock.now_ms()
    return [
        QoeEvent(
            "edge-1",
            "local",
            "demo",
            "v360",
            200,
            1000,
            ttfb_ms,
            now,
            bs=0 < i <= starved,  # stalls after its start (bs at the start is none)
            su=i == 0,
            sid=session,
        )
        for i in range(requests)
    ]


async def test_a_guardrail_breach_stops_the_harmful_experiment(
    plane: Plane, redis: aioredis.Redis
) -> None:
    rail = pb.Guardrail(metric=pb.GUARDRAIL_METRIC_REBUFFER_RATIO, threshold=0.05, min_samples=200)
    experiment = await running(plane, "ld", live_delay(*HALVES, guardrails=(rail,)))
    accounts = ACCOUNTS[:100]
    sessions = [f"s{i}" for i in range(len(accounts))]
    cells = []
    for account, session in zip(accounts, sessions, strict=True):
        reply = await plane.internal.AssignCell(
            pb.AssignCellRequest(decision="live-delay", account=account, session=session)
        )
        cells.append(reply.cell)
    # the control plays well; the fast cell stalls on a third of its requests
    healthy = [
        e
        for s, c in zip(sessions, cells, strict=True)
        for e in session_events(s, 20, 0 if c == "control" else 7, 300)
    ]
    await qoe_events(redis, healthy)
    # events of sessions no experiment exposed count nowhere
    await qoe_events(redis, session_events("stranger", 50, 50, 300))

    async def stopped() -> pb.Experiment:
        while True:
            got = await plane.operator.GetExperiment(pb.GetExperimentRequest(name="experiments/ld"))
            if got.experiment.state == pb.EXPERIMENT_STATE_STOPPED:
                return got.experiment
            await asyncio.sleep(0.05)  # (the sweeper's own period: nothing to wait on)

    final = await asyncio.wait_for(stopped(), STOP_WAIT_S)
    assert final.stop_reason.startswith("guardrail: cell fast rebuffer_ratio"), final.stop_reason
    readout = await plane.operator.GetReadout(pb.GetReadoutRequest(name=experiment.name))
    by_cell = {c.cell: c for c in readout.cells}
    n_fast = cells.count("fast")
    assert by_cell["fast"].rebuffer_ratio.samples == 20 * n_fast
    assert by_cell["fast"].rebuffer_ratio.value == pytest.approx(0.35)
    assert by_cell["fast"].rebuffer_ratio.low > 0.05
    assert by_cell["control"].rebuffer_ratio.value == 0.0
    assert by_cell["fast"].rebuffer_ratio.delta_low > 0  # worse than control, surely
    assert by_cell["fast"].startup_ms.samples == n_fast
    assert not (
        await plane.internal.AssignCell(
            pb.AssignCellRequest(decision="live-delay", account=ACCOUNTS[0])
        )
    ).in_experiment


async def test_a_healthy_experiment_keeps_running(plane: Plane, redis: aioredis.Redis) -> None:
    rail = pb.Guardrail(metric=pb.GUARDRAIL_METRIC_REBUFFER_RATIO, threshold=0.05)
    await running(plane, "ld", live_delay(*HALVES, guardrails=(rail,)))
    for i, account in enumerate(ACCOUNTS[:40]):
        await plane.internal.AssignCell(
            pb.AssignCellRequest(decision="live-delay", account=account, session=f"h{i}")
        )
        await qoe_events(redis, session_events(f"h{i}", 20, int(i % 20 == 0), 300))
    reader = plane.service.reader
    while reader.events < 800:  # every event attributed (the reader runs beside the test)
        await asyncio.sleep(0.02)
    assert await plane.service.servicer.check_guardrails() == []
    got = await plane.operator.GetExperiment(pb.GetExperimentRequest(name="experiments/ld"))
    assert got.experiment.state == pb.EXPERIMENT_STATE_RUNNING


async def test_management_takes_an_operator_credential(
    plane: Plane, credential_key: Ed25519PrivateKey
) -> None:
    create = pb.CreateExperimentRequest(experiment_id="ld", experiment=live_delay(*HALVES))
    await expect_error(plane.raw.CreateExperiment(create), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(plane.internal.CreateExperiment(create), grpc.StatusCode.PERMISSION_DENIED)
    viewer = bearer(credentials.mint(credential_key, "node", "edge-1"))
    await expect_error(
        plane.raw.GetReadout(pb.GetReadoutRequest(name="experiments/ld"), metadata=viewer),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        plane.raw.AssignCell(
            pb.AssignCellRequest(decision="live-delay", account=ACCOUNTS[0]), metadata=viewer
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await plane.operator.CreateExperiment(create)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.cells[1].__setattr__("weight", 0), "experiment.cells[1].weight"),
        (lambda e: e.cells[1].__setattr__("name", "control"), "experiment.cells[1].name"),
        (lambda e: e.cells[0].__setattr__("name", "Bad Name"), "experiment.cells[0].name"),
        (lambda e: e.__setattr__("decision", ""), "experiment.decision"),
        (lambda e: e.__setattr__("display_name", "  "), "experiment.display_name"),
        (lambda e: e.cells.pop(), "experiment.cells"),
        (
            lambda e: e.guardrails.add(metric=pb.GUARDRAIL_METRIC_ERROR_RATE, threshold=2),
            "experiment.guardrails[0].threshold",
        ),
        (lambda e: e.guardrails.add(threshold=0.1), "experiment.guardrails[0].metric"),
    ],
)
async def test_a_bad_definition_is_refused_naming_its_field(
    plane: Plane, change: Callable[[pb.Experiment], object], field: str
) -> None:
    experiment = live_delay(*HALVES)
    change(experiment)
    await expect_error(
        plane.operator.CreateExperiment(
            pb.CreateExperimentRequest(experiment_id="ld", experiment=experiment)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        field,
    )


async def test_bad_assignment_requests_are_refused_naming_their_field(plane: Plane) -> None:
    for request, field in (
        (pb.AssignCellRequest(account=ACCOUNTS[0]), "decision"),
        (pb.AssignCellRequest(decision="live-delay", account="bob"), "account"),
        (pb.AssignCellRequest(decision="Live Delay", account=ACCOUNTS[0]), "decision"),
        (
            pb.AssignCellRequest(decision="live-delay", account=ACCOUNTS[0], session="a b"),
            "session",
        ),
    ):
        await expect_error(
            plane.internal.AssignCell(request), grpc.StatusCode.INVALID_ARGUMENT, field
        )
    await expect_error(
        plane.operator.StopExperiment(pb.StopExperimentRequest(name="experiments/ld")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reason",
    )
    await expect_error(
        plane.operator.GetExperiment(pb.GetExperimentRequest(name="experiments/none")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_records_and_one_running_per_decision_hold_on_postgresql(
    make_plane: MakePlane,
) -> None:
    async with fresh_postgres() as url:
        plane = await make_plane(url)
        try:
            await postgres_checks(plane)
        finally:
            await plane.service.close()  # (its sweeper stops before the database goes)


async def postgres_checks(plane: Plane) -> None:
    await running(plane, "ld", live_delay(*HALVES))
    await plane.operator.CreateExperiment(
        pb.CreateExperimentRequest(experiment_id="ld2", experiment=live_delay(*HALVES))
    )
    await expect_error(
        plane.operator.StartExperiment(pb.StartExperimentRequest(name="experiments/ld2")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    other = live_delay(("control", 1, "1000"), ("slow", 1, "2000"))
    await expect_error(
        plane.operator.CreateExperiment(
            pb.CreateExperimentRequest(experiment_id="ld", experiment=other)
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "experiment_id",
    )
    got = await plane.operator.GetExperiment(pb.GetExperimentRequest(name="experiments/ld"))
    assert [c.name for c in got.experiment.cells] == ["control", "fast"]
    assert len(got.experiment.salt) == 32
    # the same definition again (a retry): the experiment made first, salt and all
    again = await plane.operator.CreateExperiment(
        pb.CreateExperimentRequest(experiment_id="ld", experiment=live_delay(*HALVES))
    )
    assert again.experiment == got.experiment


async def test_the_cli_defines_starts_and_reads_out(
    plane: Plane, capsys: pytest.CaptureFixture[str]
) -> None:
    from command.experiments import main

    async def cli(*args: str) -> int:
        return await asyncio.to_thread(main, ["--target", plane.target, *args])

    define = ["--decision", "live-delay", "--display-name", "Live delay"]
    cells = ["--cell", "control:1:1000", "--cell", "fast:1:500"]
    assert await cli("create", "ld", *define, *cells, "--guardrail", "rebuffer_ratio:0.05") == 0
    assert '"EXPERIMENT_STATE_DRAFT"' in capsys.readouterr().out
    assert await cli("start", "ld") == 0
    assert '"EXPERIMENT_STATE_RUNNING"' in capsys.readouterr().out
    await assign_all(plane, ACCOUNTS[:50], session="")
    assert await cli("readout", "ld") == 0
    table = capsys.readouterr().out
    assert "experiments/ld (EXPERIMENT_STATE_RUNNING)" in table
    assert [line.split()[0] for line in table.splitlines()[2:4]] == ["control", "fast"]
    assert "sample ratio: " in table
    # the service's refusal, with its field, and a non-zero exit
    assert await cli("create", "x", *define, "--cell", "a:0", "--cell", "b:1") == 1
    assert "experiment.cells[0].weight" in capsys.readouterr().err
    assert await cli("stop", "ld", "--reason", "enough") == 0
    assert "operator: enough" in capsys.readouterr().out


async def test_the_service_process_serves_health_and_stops_on_sigterm(
    factory: RpcChannelFactory, redis_url: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_url, "LIVEMESH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/e.db"}
    process, address = await launch("experiments", "serve", "--port", "0", env=env)
    try:
        health = health_pb2_grpc.HealthStub(factory.channel(address))
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="livemesh.experiments.v1.ExperimentService")
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        port = address.rsplit(":", 1)[1]
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "command.cli", "health", "experiments", "serve", "--port", port,
            env={**os.environ, **env},
        )  # fmt: skip
        assert await probe.wait() == 0  # the container's HEALTHCHECK finds it
    finally:
        assert await stop(process) == 0


async def test_a_dead_readers_events_are_claimed_and_counted_once(
    redis: aioredis.Redis, redis_url: str
) -> None:
    client = redis_client(redis_url, decode_responses=False)
    try:
        dead, alive = CellQoeReader(client, "dead"), CellQoeReader(client, "alive", claim_idle_ms=0)
        await dead.ensure_group()
        await redis.set(experiment_session("d1"), "ld|fast")
        await qoe_events(redis, session_events("d1", 30, 3, 250))
        read = await dead.read()  # ... and it dies before counting them
        assert len(read) == 1
        assert await alive.claim_orphans() == 1
        assert alive.events == 30
        counts = await read_counts(client, "ld")
        fast = cell_qoe(counts, "fast")
        assert (fast.requests, fast.starved, fast.startup.n) == (30, 3, 1)
        assert fast.startup.mean == 250
        assert await alive.claim_orphans() == 0  # acked: nothing left to count twice
    finally:
        await client.aclose()
