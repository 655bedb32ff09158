"""One consumer of the QoE stream in the processors' group: read, sum, commit.

Processors scale by adding consumers to the group: Redis hands each entry to one of them.
A batch's sums and the XACK of its entries are one Lua script, so they happen together or
not at all, and only while this consumer still owns every entry: an entry whose consumer
died stays pending until another one takes it over (XAUTOCLAIM, after ``claim_idle_ms``)
and counts it; a consumer that was only slow finds it no longer owns the entry, commits
nothing, and sums again what is still its own. Nothing is lost, nothing counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from kernel import clock
from kernel.keys import QOE_EVENTS, QOE_GROUP, qoe_second, qoe_sessions
from kernel.qoe_event import FIELD, decode, unpack
from services.qoe.aggregate import Batch, SessionEdges

log = logging.getLogger("qoe.consumer")

Entry = tuple[bytes, dict[bytes, bytes] | None]
OnCommit = Callable[[list[int], int], None]  # the batch's event times, the commit time (ms)
# a second's counters live this many windows: the console's QoE chart reads them back
# (5 minutes at the default 5 s)
WINDOWS_KEPT = 60
ACK_CHUNK = 1000  # ids per XACK inside the script (Lua's unpack has a stack limit)

# KEYS: the stream, then the seconds' hashes. ARGV: group, consumer, ttl, n, n ids, then
# (KEYS index, field, amount) triples. Returns the entries acked, or -1 (nothing written)
# when an entry is no longer this consumer's.
COMMIT = """
local group, me, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, 4 + n do
  if #redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1, me) == 0 then
    return -1
  end
end
for i = 5 + n, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for k = 2, #KEYS do redis.call('EXPIRE', KEYS[k], ttl) end
local acked = 0
for i = 5, 4 + n, {chunk} do
  local last = math.min(i + {chunk} - 1, 4 + n)
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ARGV, i, last))
end
return acked
""".replace("{chunk}", str(ACK_CHUNK))


@dataclass(frozen=True)
class ConsumerConfig:
    name: str
    window_s: int = 5  # the health's sliding window: how long a second's counters are kept
    batch: int = 50  # entries per read (of up to PER_ENTRY events each)
    block_ms: int = 200
    claim_idle_ms: int = 30_000


@dataclass
class ConsumerStats:
    events: int = 0  # counted into a second
    garbage: int = 0  # lines (or entries) that were no event: acked, not counted
    conflicts: int = 0  # commits refused: an entry had been taken over
    claimed: int = 0  # entries taken over from a dead consumer


class Consumer:
    def __init__(self, redis: Redis, config: ConsumerConfig, on_commit: OnCommit) -> None:
        self.redis = redis
        self.config = config
        self.on_commit = on_commit
        self.stats = ConsumerStats()
        self.sessions = SessionEdges()  # where each session's stalls belong
        self._commit = redis.register_script(COMMIT)
        self._own_pending = True  # at start, and after a refused commit: read our PEL first
        self._next_claim_ms = 0

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(QOE_EVENTS, QOE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def step(self) -> int:
        """One round: our own pending entries, else a dead consumer's, else new ones;
        how many were counted and acked."""
        cfg = self.config
        entries: list[Entry] = []
        if self._own_pending:
            entries = await self._read("0", block=None)
            self._own_pending = bool(entries)
        now = clock.now_ms()
        if not entries and now >= self._next_claim_ms:
            self._next_claim_ms = now + cfg.claim_idle_ms // 2
            reply = await self.redis.xautoclaim(
                QOE_EVENTS, QOE_GROUP, cfg.name, cfg.claim_idle_ms, "0-0", count=cfg.batch
            )
            entries = reply[1]
            self.stats.claimed += len(entries)
        if not entries:
            entries = await self._read(">", block=cfg.block_ms)
        return await self.process(entries) if entries else 0

    async def _read(self, start: str, block: int | None) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            QOE_GROUP, self.config.name, {QOE_EVENTS: start}, count=self.config.batch, block=block
        )
        entries: list[Entry] = reply[0][1] if reply else []  # RESP2: [[stream, entries]]
        return entries

    async def process(self, entries: Sequence[Entry]) -> int:
        """Sum ``entries`` and commit them; how many were acked (0 when refused)."""
        batch = Batch(self.sessions)
        ids: list[bytes] = []
        times: list[int] = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            for line in unpack(fields[FIELD]) if fields and FIELD in fields else [b""]:
                event = decode(line)
                if event is None:
                    self.stats.garbage += 1
                    continue
                batch.add(event)
                times.append(event.ts_ms)
        await self.add_sessions(batch)
        acked = await self.commit(batch, ids)
        if acked < 0:
            self.stats.conflicts += 1
            self._own_pending = True
            return 0
        self.stats.events += batch.events
        self.on_commit(times, clock.now_ms())
        return acked

    async def add_sessions(self, batch: Batch) -> None:
        """Each second's sessions per edge, into its HyperLogLog. Before the commit, and
        apart from it: PFADD is idempotent, so a batch summed again (after a refused
        commit, or by the consumer that took it over) counts no session twice."""
        if not batch.sids:
            return
        ttl = self.config.window_s * WINDOWS_KEPT
        pipe = self.redis.pipeline(transaction=False)
        for (second, edge), sids in batch.sids.items():
            key = qoe_sessions(second, edge)
            pipe.pfadd(key, *sids)
            pipe.expire(key, ttl)
        await pipe.execute()

    async def commit(self, batch: Batch, ids: list[bytes]) -> int:
        if not ids:
            return 0
        increments = batch.increments()
        keys = [QOE_EVENTS, *(qoe_second(start) for start in increments)]
        args: list[bytes | str | int] = [
            QOE_GROUP,
            self.config.name,
            self.config.window_s * WINDOWS_KEPT,
            len(ids),
            *ids,
        ]
        for index, fields in enumerate(increments.values(), start=2):
            for field, amount in fields.items():
                args += (index, field, amount)
        acked: int = await self._commit(keys=keys, args=args)
        return acked
