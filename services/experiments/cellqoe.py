"""Per-cell QoE: the player QoE stream's events, attributed to the cell of their session.

An exposure logged with a session records ``session -> (experiment, cell)``
(:func:`kernel.keys.experiment_session`). This reader is a second consumer group on the
QoE stream the processors read (``lm:{qoe}:events``, :mod:`kernel.qoe_event`), so it
sees every event whatever the processors do; it keeps an event whose CMCD ``sid`` names
an exposed session and adds it to that cell's sums in the experiment's counts hash.

The sums are those of the QoE processor's windows (requests, starved (a ``bs`` past the
session's start-up, as the processor counts it), errors, startup
requests and their time to first byte) plus the sum of squares of that time, which the
readout's Welch interval needs and the processor's windows do not keep. Delivery is at
least once: the sums and the XACK are on different slots (the experiment's tag and the
stream's), so a reader that dies between them has that batch counted again by the
instance that claims its pending entries (XAUTOCLAIM, once they are idle 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from kernel.keys import EXPERIMENTS_QOE_GROUP, QOE_EVENTS, experiment_counts, experiment_session
from kernel.qoe_event import FIELD, QoeEvent, decode, unpack
from kernel.rpc.server import STORE_DOWN
from services.experiments.stats import Moments
from services.qoe.aggregate import SessionEdges, rebuffered

log = logging.getLogger("experiments.qoe")

SEP = "|"
COUNTERS = ("requests", "starved", "errors", "startup", "startup_ms", "startup_ms2")
SESSION_TTL_S = 24 * 3600
CLAIM_IDLE_MS = 30_000  # an entry read this long ago and not acked: its reader died


def sums_of(event: QoeEvent, rebuffer: bool) -> tuple[int, ...]:
    """What one event adds to its cell, in :data:`COUNTERS` order; ``rebuffer``: its
    ``bs`` is a stall, not its session's start-up (:func:`services.qoe.aggregate.rebuffered`)."""
    failed = event.status >= 400 or event.status == 0
    startup = (1, event.ttfb_ms, event.ttfb_ms * event.ttfb_ms) if event.su else (0, 0, 0)
    return (1, int(rebuffer), int(failed), *startup)


@dataclass(frozen=True)
class CellQoe:
    """One cell's QoE sums."""

    requests: int
    starved: int
    errors: int
    startup: Moments
    exposures: int


def cell_qoe(counts: Mapping[str, str | int], cell: str) -> CellQoe:
    """The sums of ``cell`` in an experiment's counts hash."""

    def get(name: str) -> int:
        return int(counts.get(f"{cell}{SEP}{name}", 0))

    return CellQoe(
        requests=get("requests"),
        starved=get("starved"),
        errors=get("errors"),
        startup=Moments(get("startup"), float(get("startup_ms")), float(get("startup_ms2"))),
        exposures=get("exposures"),
    )


async def read_counts(redis: Redis, experiment_id: str) -> dict[str, str]:
    raw = await redis.hgetall(experiment_counts(experiment_id))
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Entry = tuple[bytes, dict[bytes, bytes] | None]


class CellQoeReader:
    """Reads the QoE stream in its own group and adds exposed sessions' events to their
    cells; :meth:`run` until cancelled (one per service instance; instances share the
    group, so each entry is counted by one of them)."""

    def __init__(
        self,
        redis: Redis,
        consumer: str,
        batch: int = 50,
        block_ms: int = 200,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        self.redis = redis  # a client that returns bytes
        self.consumer = consumer  # (new per process: a restart's leftovers are claimed)
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.events = 0  # attributed to a cell
        self.sessions = SessionEdges()  # which sessions are past their start-up

    async def ensure_group(self) -> None:
        """The group, reading from the stream's end when first made (older events belong
        to no exposure logged since)."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: made before
            await self.redis.xgroup_create(QOE_EVENTS, EXPERIMENTS_QOE_GROUP, id="$", mkstream=True)

    async def run(self) -> None:
        await self.ensure_group()
        claimed_at = -math.inf
        while True:
            try:
                if time.monotonic() - claimed_at >= self.claim_idle_ms / 1000:
                    claimed_at = time.monotonic()
                    await self.claim_orphans()
                await self.process(await self.read())
            except STORE_DOWN as exc:
                log.warning("QoE stream unreadable (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def read(self) -> list[Entry]:
        """New entries for this reader (waiting up to ``block_ms``), now pending on it."""
        reply: Any = await self.redis.xreadgroup(
            EXPERIMENTS_QOE_GROUP,
            self.consumer,
            {QOE_EVENTS: ">"},
            count=self.batch,
            block=self.block_ms,
        )
        return list(reply[0][1]) if reply else []

    async def claim_orphans(self) -> int:
        """Count the entries another instance read and never acked (it died: they have
        been idle ``claim_idle_ms``); how many were taken over."""
        start: bytes | str = "0-0"
        taken = 0
        while True:
            reply: Any = await self.redis.xautoclaim(
                QOE_EVENTS,
                EXPERIMENTS_QOE_GROUP,
                self.consumer,
                self.claim_idle_ms,
                start_id=start,
                count=self.batch,
            )
            start, entries = reply[0], list(reply[1])
            if entries:
                await self.process(entries)
                taken += len(entries)
            if start in (b"0-0", "0-0"):
                return taken

    async def process(self, entries: Sequence[Entry]) -> int:
        """Attribute the events of ``entries``, add them up, ack the entries; the count."""
        events = [e for _, fields in entries if fields for e in _events(fields)]
        sessions = sorted({e.sid for e in events if e.sid})
        cells: dict[str, str] = {}
        if sessions:
            found = await self.redis.mget([experiment_session(s) for s in sessions])
            cells = {s: _text(c) for s, c in zip(sessions, found, strict=True) if c}
        sums: dict[str, dict[str, int]] = {}
        counted = 0
        for event in events:
            where = cells.get(event.sid)
            if where is None:
                continue
            experiment_id, _, cell = where.partition(SEP)
            fields = sums.setdefault(experiment_id, {})
            rebuffer = rebuffered(event, *self.sessions.note(event))
            for name, amount in zip(COUNTERS, sums_of(event, rebuffer), strict=True):
                if amount:
                    key = f"{cell}{SEP}{name}"
                    fields[key] = fields.get(key, 0) + amount
            counted += 1
        pipe = self.redis.pipeline(transaction=False)
        for experiment_id, fields in sums.items():
            for key, amount in fields.items():
                pipe.hincrby(experiment_counts(experiment_id), key, amount)
        if entries:
            pipe.xack(QOE_EVENTS, EXPERIMENTS_QOE_GROUP, *[entry_id for entry_id, _ in entries])
        await pipe.execute()
        self.events += counted
        return counted


def _events(fields: dict[bytes, bytes]) -> list[QoeEvent]:
    raw = fields.get(FIELD)
    if raw is None:
        return []
    return [e for line in unpack(raw) if (e := decode(line)) is not None]
