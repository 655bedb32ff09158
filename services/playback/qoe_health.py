"""The edges' QoE health read from Redis for press play and steering, and the verdict
on them (policy: :mod:`.qoe_demotion`).

One read (a pipeline of ``HGETALL lm:{qoe}:health:{edge}``) at most every ``ttl_s``,
in the background: a caller gets the last verdict at once and never waits on Redis
(press play is the hot path; QoE is advice, and windows are seconds long anyway). A
health record older than its window's successor is no evidence (the processor writes
only the edges it heard of). When Redis fails or is slow, the last verdict stands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kernel import clock
from kernel.keys import qoe_health
from services.playback.qoe_demotion import (
    Demoter,
    DemotionPolicy,
    Health,
    Verdict,
    instance_edge,
)

log = logging.getLogger(__name__)

READ_TTL_S = 0.5
READ_TIMEOUT_S = 0.2  # press play does not wait longer for advice
# the processor's sliding window ends 1-2 s before now (a settling second, then a tick a
# second); a record whose window ended this long ago is a processor that stopped
STALE_S = 4


def parse_health(record: Mapping[bytes, bytes], now_s: float) -> Health | None:
    """An edge's health hash as one window's figures; None when absent, stale or malformed."""
    try:
        window = int(record[b"window"])
        window_s = int(record[b"window_s"])
        requests, sessions = int(float(record[b"requests"])), int(record[b"sessions"])
        found = Health(float(record[b"score"]), requests, window, sessions)
    except (KeyError, ValueError):
        return None
    return found if now_s - (window + window_s) < STALE_S else None


class QoeHealthReader:
    def __init__(
        self,
        redis: aioredis.Redis,
        policy: DemotionPolicy | None = None,
        ttl_s: float = READ_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis  # replies as bytes
        self.demoter = Demoter(policy or DemotionPolicy())
        self.ttl_s = ttl_s
        self.monotonic = monotonic
        self._last = Verdict()
        self._due = 0.0  # when the next read may start
        self._reading: asyncio.Task[Verdict] | None = None

    def verdict(self, instance_names: Sequence[str]) -> Verdict:
        """What to do about the QoE of the registry instances ``instance_names``: the last
        verdict, a read started when one is due."""
        now = self.monotonic()
        if now >= self._due and self._reading is None:
            self._due = now + self.ttl_s
            self._reading = asyncio.get_running_loop().create_task(
                self._read(tuple(instance_names))
            )
            self._reading.add_done_callback(self._read_done)
        return self._last

    def _read_done(self, task: asyncio.Task[Verdict]) -> None:
        self._reading = None

    async def _read(self, names: tuple[str, ...]) -> Verdict:
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(qoe_health(instance_edge(name)))
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                records = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("QoE health unread (%r): the last demotions stand", exc)
            return self._last
        now_s = clock.now_ms() / 1000
        health = {n: parse_health(r, now_s) for n, r in zip(names, records, strict=True)}
        verdict = self.demoter.observe(health, self.monotonic())
        if verdict != self._last:
            demoted, probation = sorted(verdict.demoted), sorted(verdict.probation)
            log.info("QoE demotes %s; on probation: %s", demoted or "none", probation or "none")
        self._last = verdict
        return verdict
