"""The experiments service's records in the relational database (:mod:`kernel.db`).

An experiment's definition (cells, weights, salt, guardrails) and its state must outlive
Redis: a salt lost would reshuffle every account's cell mid-experiment. The record is the
Experiment message as JSON; ``state`` and ``running_decision`` are columns so the
database itself keeps one running experiment per decision (a UNIQUE column that is NULL
unless running: both engines let NULLs repeat) and a state change is a compare-and-set.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from kernel.db import Migration, database_down, migrate
from kernel.rpc.cache import ReadThroughCache
from livemesh.experiments.v1 import experiments_pb2 as pb

COMPONENT = "experiments"
RUNNING_CACHE_S = 1.0  # a start or stop reaches every instance's AssignCell within this

MIGRATIONS = (
    Migration(
        1,
        "experiments",
        (
            """CREATE TABLE experiments (
                id VARCHAR(63) PRIMARY KEY,
                decision VARCHAR(63) NOT NULL,
                running_decision VARCHAR(63) UNIQUE,
                state INTEGER NOT NULL,
                record TEXT NOT NULL,
                create_ns BIGINT NOT NULL
            )""",
        ),
    ),
)

experiments = sa.table(
    "experiments",
    sa.column("id", sa.String),
    sa.column("decision", sa.String),
    sa.column("running_decision", sa.String),
    sa.column("state", sa.Integer),
    sa.column("record", sa.String),
    sa.column("create_ns", sa.BigInteger),
)


class ExperimentExists(Exception):
    """An experiment of that id was created before."""


class DecisionTaken(Exception):
    """Another experiment runs for the decision."""


def _record(experiment: pb.Experiment) -> str:
    return json_format.MessageToJson(experiment, indent=None)


def _parse(raw: str) -> pb.Experiment:
    return json_format.Parse(raw, pb.Experiment())


class ExperimentStore:
    """Experiment records; the running experiment of a decision is read through a short
    cache (AssignCell is on press play's path) that answers its last record while the
    database is down."""

    def __init__(self, engine: AsyncEngine, cache_ttl_s: float = RUNNING_CACHE_S) -> None:
        self.engine = engine
        self._running: ReadThroughCache[pb.Experiment | None] = ReadThroughCache(
            cache_ttl_s, stale_if=database_down
        )

    async def migrate(self) -> None:
        await migrate(self.engine, COMPONENT, MIGRATIONS)

    async def create(self, experiment_id: str, experiment: pb.Experiment) -> None:
        """Store a new DRAFT experiment. Raises :class:`ExperimentExists`."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.insert(experiments).values(
                        id=experiment_id,
                        decision=experiment.decision,
                        state=experiment.state,
                        record=_record(experiment),
                        create_ns=time.time_ns(),
                    )
                )
        except IntegrityError:
            raise ExperimentExists(experiment_id) from None

    async def get(self, experiment_id: str) -> pb.Experiment | None:
        async with self.engine.connect() as conn:
            raw = await conn.scalar(
                sa.select(experiments.c.record).where(experiments.c.id == experiment_id)
            )
        return None if raw is None else _parse(raw)

    async def transition(self, experiment_id: str, was: int, now: pb.Experiment) -> bool:
        """Store ``now`` if the experiment is still in state ``was`` (False: it is not).
        Raises :class:`DecisionTaken` when ``now`` runs and another runs for its decision."""
        running = now.decision if now.state == pb.EXPERIMENT_STATE_RUNNING else None
        try:
            async with self.engine.begin() as conn:
                updated = await conn.execute(
                    sa.update(experiments)
                    .where(experiments.c.id == experiment_id, experiments.c.state == was)
                    .values(state=now.state, running_decision=running, record=_record(now))
                )
        except IntegrityError:
            raise DecisionTaken(now.decision) from None
        finally:
            self._running.invalidate(now.decision)
        return bool(updated.rowcount)

    async def running(self, decision: str) -> pb.Experiment | None:
        """The experiment running for ``decision``, if one does (cached)."""
        return await self._running.get(decision, lambda: self._load_running(decision))

    async def _load_running(self, decision: str) -> pb.Experiment | None:
        async with self.engine.connect() as conn:
            raw = await conn.scalar(
                sa.select(experiments.c.record).where(experiments.c.running_decision == decision)
            )
        return None if raw is None else _parse(raw)

    async def all_running(self) -> list[pb.Experiment]:
        async with self.engine.connect() as conn:
            rows = await conn.scalars(
                sa.select(experiments.c.record).where(
                    experiments.c.state == pb.EXPERIMENT_STATE_RUNNING
                )
            )
            return [_parse(raw) for raw in rows]

    async def page(self, offset: int, size: int) -> list[pb.Experiment]:
        """Experiments in creation order, ``size`` of them from ``offset``."""
        async with self.engine.connect() as conn:
            rows = await conn.scalars(
                sa.select(experiments.c.record)
                .order_by(experiments.c.create_ns, experiments.c.id)
                .offset(offset)
                .limit(size)
            )
            return [_parse(raw) for raw in rows]
