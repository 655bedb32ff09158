"""Experiment service: define, start, stop, read experiments; allocate accounts to cells;
log exposures; stop an experiment whose guardrail is breached; read out per-cell figures.

Definitions and states are database records (:mod:`.store`); allocation is a pure hash
(:mod:`.allocation`), so it needs no record per account and every instance agrees.
Exposures go to Redis under the experiment's hash tag (:mod:`kernel.keys`): an
append-only stream, the set of exposed accounts per cell (the units of the
sample-ratio check) and per-cell counts. Per-cell QoE comes from the player QoE stream
(:mod:`.cellqoe`); a sweeper checks the running experiments' guardrails and stops a
harmful one (:mod:`.readout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import grpc

from kernel.config import ExperimentsSettings
from kernel.db import connect_database, database_down
from kernel.keys import (
    experiment_counts,
    experiment_exposures,
    experiment_session,
    experiment_units,
)
from kernel.rpc import access, validate
from kernel.rpc.auth import VIEWER, TokenVerifier, bearer_token, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from kernel.rpc.process import Service, connect_redis, service_main
from kernel.rpc.server import STORE_DOWN, ServiceSpec
from livemesh.experiments.v1 import experiments_pb2 as pb
from livemesh.experiments.v1 import experiments_pb2_grpc as pb_grpc
from services.experiments.allocation import cell_index
from services.experiments.cellqoe import SEP, SESSION_TTL_S, CellQoeReader, read_counts
from services.experiments.definition import defined, same_definition
from services.experiments.readout import breach, readout
from services.experiments.store import DecisionTaken, ExperimentExists, ExperimentStore

log = logging.getLogger(__name__)

EXPOSURES_KEPT = 1_000_000  # entries of an experiment's exposure stream (approximate trim)
GUARDRAIL_INTERVAL_S = 5.0


def _experiment_id(name: str, field: str = "name") -> str:
    (experiment_id,) = validate.parse_name(name, field, "experiments")
    return experiment_id


def _session(value: str) -> str:
    return validate.request_id(value, "session")


class ExperimentServicer(pb_grpc.ExperimentServiceServicer):
    def __init__(
        self, redis_url: str, store: ExperimentStore, viewers: TokenVerifier | None = None
    ) -> None:
        self.redis = connect_redis(redis_url)
        self.store = store
        self.viewers = viewers

    async def _load(self, experiment_id: str) -> pb.Experiment:
        experiment = await self.store.get(experiment_id)
        if experiment is None:
            raise NotFound(f"experiments/{experiment_id} not found")
        return experiment

    async def _transition(self, experiment: pb.Experiment, was: int) -> pb.Experiment:
        experiment_id = _experiment_id(experiment.name)
        try:
            changed = await self.store.transition(experiment_id, was, experiment)
        except DecisionTaken:
            raise FailedPrecondition(
                f"another experiment runs for decision {experiment.decision}"
            ) from None
        if not changed:
            raise FailedPrecondition(f"{experiment.name} changed state meanwhile")
        return experiment

    async def stop(self, experiment: pb.Experiment, reason: str) -> pb.Experiment:
        """Stop a running experiment for ``reason``."""
        if experiment.state != pb.EXPERIMENT_STATE_RUNNING:
            raise FailedPrecondition(f"{experiment.name} is not running")
        experiment.state = pb.EXPERIMENT_STATE_STOPPED
        experiment.stop_reason = reason
        experiment.stop_time.FromNanoseconds(time.time_ns())
        return await self._transition(experiment, pb.EXPERIMENT_STATE_RUNNING)

    @access.operator
    async def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateExperimentResponse:
        experiment_id = validate.resource_id(request.experiment_id, "experiment_id")
        experiment = defined(experiment_id, request.experiment)
        try:
            await self.store.create(experiment_id, experiment)
        except ExperimentExists:
            stored = await self._load(experiment_id)
            if not same_definition(stored, experiment):
                raise AlreadyExists(
                    f"experiment_id: experiments/{experiment_id} exists", "experiment_id"
                ) from None
            experiment = stored  # a retry: the same definition made before
        return pb.CreateExperimentResponse(experiment=experiment)

    @access.operator
    async def StartExperiment(
        self, request: pb.StartExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartExperimentResponse:
        experiment = await self._load(_experiment_id(request.name))
        if experiment.state == pb.EXPERIMENT_STATE_RUNNING:  # a retry: started already
            return pb.StartExperimentResponse(experiment=experiment)
        if experiment.state != pb.EXPERIMENT_STATE_DRAFT:
            raise FailedPrecondition(f"{experiment.name} is not a draft (it ran before)")
        experiment.state = pb.EXPERIMENT_STATE_RUNNING
        experiment.start_time.FromNanoseconds(time.time_ns())
        experiment = await self._transition(experiment, pb.EXPERIMENT_STATE_DRAFT)
        return pb.StartExperimentResponse(experiment=experiment)

    @access.operator
    async def StopExperiment(
        self, request: pb.StopExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopExperimentResponse:
        experiment_id = _experiment_id(request.name)
        reason = validate.text(request.reason, "reason", 1, 200)
        experiment = await self._load(experiment_id)
        if experiment.state != pb.EXPERIMENT_STATE_STOPPED:  # (stopped: a retry, or too late)
            experiment = await self.stop(experiment, f"operator: {reason}")
        return pb.StopExperimentResponse(experiment=experiment)

    @access.operator
    async def GetExperiment(
        self, request: pb.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetExperimentResponse:
        return pb.GetExperimentResponse(experiment=await self._load(_experiment_id(request.name)))

    @access.operator
    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExperimentsResponse:
        size = validate.page_size(request.page_size, 20, 100)
        offset = validate.offset_from_token(request.page_token)
        found = await self.store.page(offset, size + 1)
        token = validate.next_offset_token(offset, size, len(found))
        return pb.ListExperimentsResponse(experiments=found[:size], next_page_token=token)

    async def _own_account(self, context: grpc.aio.ServicerContext, account: str) -> None:
        """A viewer may ask about its own account only (a service or operator about any)."""
        if self.viewers is None:
            return  # (no viewer token passes the access stage then)
        try:
            principal = await self.viewers.verify(bearer_token(context))
        except Unauthenticated:
            return  # a service's or operator's credential, which the access stage verified
        if principal.role == VIEWER:
            principal.require_account(account)

    @access.viewer_or_internal(
        "playback asks at press play, forwarding its viewer's token (the viewer's own "
        "account only); the rig and other services ask with their credential"
    )
    async def AssignCell(
        self, request: pb.AssignCellRequest, context: grpc.aio.ServicerContext
    ) -> pb.AssignCellResponse:
        if bool(request.decision) == bool(request.experiment):
            raise InvalidArgument("decision", "name exactly one of decision and experiment")
        validate.parse_name(request.account, "account", "accounts")
        session = _session(request.session)
        await self._own_account(context, request.account)
        if request.decision:
            validate.resource_id(request.decision, "decision")
            experiment = await self.store.running(request.decision)
            if experiment is None:
                return pb.AssignCellResponse(in_experiment=False)
        else:
            experiment = await self._load(_experiment_id(request.experiment, "experiment"))
        cell = experiment.cells[
            cell_index(experiment.salt, request.account, [c.weight for c in experiment.cells])
        ]
        running = experiment.state == pb.EXPERIMENT_STATE_RUNNING
        if session and running:
            await self._expose(experiment, request.account, cell.name, session)
        return pb.AssignCellResponse(
            in_experiment=running, experiment=experiment.name, cell=cell.name, value=cell.value
        )

    @access.internal("the service that applied the cell logs it; viewers could skew a readout")
    async def LogExposure(
        self, request: pb.LogExposureRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogExposureResponse:
        experiment_id = _experiment_id(request.experiment, "experiment")
        validate.parse_name(request.account, "account", "accounts")
        validate.resource_id(request.cell, "cell")
        session = _session(request.session)
        experiment = await self._load(experiment_id)
        if experiment.state != pb.EXPERIMENT_STATE_RUNNING:
            raise FailedPrecondition(f"{experiment.name} is not running")
        weights = [c.weight for c in experiment.cells]
        own = experiment.cells[cell_index(experiment.salt, request.account, weights)].name
        if request.cell != own:
            raise InvalidArgument("cell", f"{request.account} is in cell {own}, not {request.cell}")
        await self._expose(experiment, request.account, own, session)
        return pb.LogExposureResponse()

    async def _expose(
        self, experiment: pb.Experiment, account: str, cell: str, session: str
    ) -> None:
        """Append the exposure and count its account, in one MULTI on the experiment's slot;
        then map the session to the cell for the QoE stream's events."""
        experiment_id = _experiment_id(experiment.name)
        entry = {"account": account, "cell": cell, "session": session}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                experiment_exposures(experiment_id),
                entry,  # type: ignore[arg-type]  # (redis-py's stub wants bytes keys)
                maxlen=EXPOSURES_KEPT,
                approximate=True,
            )
            pipe.sadd(experiment_units(experiment_id, cell), account)
            pipe.hincrby(experiment_counts(experiment_id), f"{cell}{SEP}exposures", 1)
            await pipe.execute()
        if session:
            await self.redis.set(
                experiment_session(session), f"{experiment_id}{SEP}{cell}", ex=SESSION_TTL_S
            )

    @access.operator
    async def GetReadout(
        self, request: pb.GetReadoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReadoutResponse:
        experiment_id = _experiment_id(request.name)
        experiment = await self._load(experiment_id)
        counts = await read_counts(self.redis, experiment_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for cell in experiment.cells:
                pipe.scard(experiment_units(experiment_id, cell.name))
            sizes = await pipe.execute()
        accounts = {c.name: int(n) for c, n in zip(experiment.cells, sizes, strict=True)}
        return readout(experiment, counts, accounts)

    async def check_guardrails(self) -> list[str]:
        """Stop every running experiment a guardrail says is harmful; their names."""
        stopped = []
        for experiment in await self.store.all_running():
            if not experiment.guardrails:
                continue
            counts = await read_counts(self.redis, _experiment_id(experiment.name))
            why = breach(experiment, counts)
            if why is None:
                continue
            with contextlib.suppress(FailedPrecondition):  # another instance stopped it
                await self.stop(experiment, why)
                log.warning("%s stopped: %s", experiment.name, why)
                stopped.append(experiment.name)
        return stopped


class ExperimentService(Service):
    def __init__(
        self,
        redis_url: str,
        database_url: str,
        guardrail_interval_s: float = GUARDRAIL_INTERVAL_S,
        viewers: TokenVerifier | None = None,
    ) -> None:
        self.engine = connect_database(database_url)
        self.servicer = ExperimentServicer(redis_url, ExperimentStore(self.engine), viewers)
        consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.reader = CellQoeReader(connect_redis(redis_url, decode=False), consumer)
        self.guardrail_interval_s = guardrail_interval_s
        self._tasks: list[asyncio.Task[None]] = []

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["ExperimentService"].full_name,
                self.servicer,
                pb_grpc.add_ExperimentServiceServicer_to_server,
                viewers=self.servicer.viewers,
            )
        ]

    async def start(self) -> None:
        await self.servicer.store.migrate()
        await self.reader.ensure_group()  # events from now on count, before any exposure
        self._tasks = [
            asyncio.create_task(self.reader.run(), name="experiments-qoe"),
            asyncio.create_task(self._guard(), name="experiments-guardrails"),
        ]

    async def _guard(self) -> None:
        while True:
            await asyncio.sleep(self.guardrail_interval_s)
            try:
                await self.servicer.check_guardrails()
            except Exception as exc:  # the sweeper outlives an outage; the next round retries
                if isinstance(exc, STORE_DOWN) or database_down(exc):
                    log.warning("guardrails unchecked: a store is down (%s)", exc)
                else:
                    log.exception("guardrail check failed")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.servicer.redis.aclose()
        await self.reader.redis.aclose()
        await self.engine.dispose()


async def build(settings: ExperimentsSettings, factory: RpcChannelFactory) -> Service:
    assert settings.database_url  # the process's embedded SQLite when none is set
    return ExperimentService(
        settings.required_redis_url(),
        settings.database_url,
        guardrail_interval_s=settings.guardrail_interval,
        viewers=TokenVerifier(identity_key_loader(factory, settings.identity_target)),
    )


def main(argv: list[str] | None = None) -> int:
    return service_main(ExperimentsSettings, argv, build, needs_redis=True)
