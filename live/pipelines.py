"""Redundant pipelines: two encoders per channel, one epoch, one served copy of each segment.

Pipelines ``a`` and ``b`` (``livemesh channel NAME --pipeline a|b``) are separate
processes that encode the same synthetic source on the same clock. They agree on the
epoch through Redis: the first one up creates the epoch record (one script: the record
is written only where none exists) with a start one segment ahead, so a second started
with it begins at frame 0 too; every later pipeline, a restarted one included, joins the
record as it finds it and starts at the next segment boundary. So both number and time
every segment and chunk alike (:mod:`live.timing` is pure arithmetic from the start),
their init segments are byte-identical, and so is every video segment both made in
full (libx264 with one thread, and for video and audio a fresh encoder at each segment
start, the same input, the same settings: a pipeline that skipped frames or was
restarted makes its peer's bytes again from its next segment).

Each pipeline publishes under its own keys (:meth:`kernel.keys.ChannelKeys.pipeline`)
with what its packager found wrong (:mod:`live.inspect`; and a segment it left before
its last chunk, the rest skipped by a late encoder, which no chunk shows), and renews a short-lived
*alive* key with every chunk. The copy the origins serve (the channel's usual segment
keys, so the origin, the MPD and the playlists read what they always read) is chosen in
the same script, so every origin and shield sees one choice:

- a segment is *usable* from a pipeline that has chunks of it, no defect in it, and is
  either alive or has completed it; when no pipeline's copy is usable, a complete
  defective copy is served rather than none (both encoders fell behind at once);
- its owner keeps the segment while usable, except that a usable copy with more chunks
  whose first ones are byte-identical to the served ones takes over at once (a switch
  mid-segment that no reader can see): the served copy keeps the pace of the fastest
  clean pipeline, so an owner that died mid-segment holds nobody up when its peer makes
  the same bytes; an owner no longer usable gives the segment to the first usable
  pipeline in preference order (a, then b);
- a new owner whose chunks so far are byte-identical to the served ones just continues
  them; otherwise the served segment is
  replaced and its *generation* goes up, and the origin aborts every response that was
  streaming the old bytes (:meth:`live.state.ChannelStore.generation`), so a client
  retries the whole segment rather than splicing two encodes. A replacement waits until
  the new owner has at least as many chunks, so a healthy follower a few milliseconds
  behind is never taken for a different encode;
- segments are settled in order: segment ``n`` is not served before ``n - 1`` is
  complete (or no live pipeline has any of it), so a pipeline that died mid-segment
  with a copy only it made holds the channel for at most its alive key's lifetime,
  within the origin's hold of a next segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import get_args

import redis.asyncio as aioredis

from kernel import clock
from kernel.config.data import Pipeline
from kernel.epoch import Epoch, Position
from kernel.keys import ChannelKeys
from kernel.timeline import Timeline
from live.package import Chunk
from live.state import EVENT_STREAM_LENGTH, ChannelStore

PIPELINES: tuple[str, ...] = get_args(Pipeline)  # in order of preference
ALIVE_CHUNKS = 3  # a pipeline silent for this many chunk durations is taken for dead

# KEYS: epoch, epochs, position (served), then init (served) per rendition
# ARGV: epoch JSON, window_s, epoch id, then init bytes per rendition
# Returns the epoch on record: the one just written, or the one found. An epoch whose
# record outlived its window (nothing published for window_s) is not joined: its media
# URLs would all be 404.
CLAIM_EPOCH = """
local found = redis.call('GET', KEYS[1])
if found and redis.call('HEXISTS', KEYS[2], cjson.decode(found).id) == 1 then return found end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[2]) end
return ARGV[1]
"""

# KEYS: channel key prefix, owners, position (served), init (served), epochs, events, epoch
# ARGV: bytes, window_s, rep, segment, chunk, last, defect ("" for none), epoch id,
#       stream length, alive ms, this pipeline's number (1-based), the pipeline names
# The pipelines' own keys are spelt in the script from the prefix (as kernel/keys.py
# spells them): which segments it settles is only known inside it. They all carry the
# channel's hash tag, so they live on the slot of the declared keys.
PUBLISH = """
local window, rep, epoch_id = ARGV[2], ARGV[3], ARGV[8]
local seg, k, me = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[11])
local names = {}
for i = 12, #ARGV do names[#names + 1] = ARGV[i] end
local prefix, owners, served_pos = KEYS[1], KEYS[2], KEYS[3]
local function own(i, what) return prefix .. ':p:' .. names[i] .. ':' .. what end
local function own_seg(i, s) return own(i, 'seg:' .. epoch_id .. ':' .. rep .. ':' .. s) end
local function own_pos(i) return own(i, 'pos:' .. epoch_id) end
local function own_defects(i) return own(i, 'defects:' .. epoch_id) end
local function alive(i) return prefix .. ':alive:' .. names[i] end
local function served_seg(s) return prefix .. ':seg:' .. epoch_id .. ':' .. rep .. ':' .. s end
local function parse(raw)
  local s, c, f = string.match(raw, '^(%d+):(%d+):(%d)$')
  return tonumber(s), tonumber(c), f == '1'
end
local function has_complete(raw, s)
  if not raw then return false end
  local ps, _, pf = parse(raw)
  return s < ps or (s == ps and pf)
end

-- 1. this pipeline's own copy, its defect record, and its being alive
if redis.call('LLEN', own_seg(me, seg)) <= k then
  -- a segment left before its last chunk lost its tail to skipped frames: no chunk of
  -- it shows that (each one it has is sound), only that the next segment began
  local was = redis.call('HGET', own_pos(me), rep)
  if was then
    local ps, pc, pf = parse(was)
    if ps < seg and not pf then
      redis.call('HSET', own_defects(me), rep .. ':' .. ps,
                 'ends after chunk ' .. pc .. ': its last chunks were skipped')
      redis.call('EXPIRE', own_defects(me), window)
    end
  end
  redis.call('RPUSH', own_seg(me, seg), ARGV[1])
  redis.call('EXPIRE', own_seg(me, seg), window)
  redis.call('HSET', own_pos(me), rep, seg .. ':' .. k .. ':' .. ARGV[6])
  redis.call('EXPIRE', own_pos(me), window)
  if ARGV[7] ~= '' then
    redis.call('HSET', own_defects(me), rep .. ':' .. seg, ARGV[7], rep .. ':' .. seg .. ':' .. k,
               ARGV[7])
    redis.call('EXPIRE', own_defects(me), window)
  end
end
redis.call('SET', alive(me), '1', 'PX', ARGV[10])
if k == 0 then
  redis.call('EXPIRE', KEYS[4], window)
  redis.call('EXPIRE', KEYS[5], window)
end

-- 2. the served copy, settled segment by segment up to this one
local function usable(i, s)
  if redis.call('LLEN', own_seg(i, s)) == 0 then return false end
  if redis.call('HEXISTS', own_defects(i), rep .. ':' .. s) == 1 then return false end
  return redis.call('EXISTS', alive(i)) == 1 or has_complete(redis.call('HGET', own_pos(i), rep), s)
end

local function complete_in(i, s)
  return redis.call('LLEN', own_seg(i, s)) > 0
    and has_complete(redis.call('HGET', own_pos(i), rep), s)
end

-- whether pipeline i's copy of segment s starts with the served copy's first n chunks
local function extends(i, s, target, n)
  for j = 0, n - 1 do
    if redis.call('LINDEX', target, j) ~= redis.call('LINDEX', own_seg(i, s), j) then
      return false
    end
  end
  return true
end

-- settles segment s: 1 when its served copy is complete, 0 while it is awaited, -1 when
-- nobody has or will have it
local function settle(s)
  local field = rep .. ':' .. s
  local owner, gen = nil, 0
  local raw = redis.call('HGET', owners, field)
  if raw then
    local name, g = string.match(raw, '^(.+):(%d+)$')
    gen = tonumber(g)
    for i = 1, #names do if names[i] == name then owner = i end end
  end
  local target = served_seg(s)
  local have = redis.call('LLEN', target)
  local chosen = nil
  if owner and usable(owner, s) then chosen = owner end
  -- a copy further ahead whose first chunks are the served bytes takes over at once: no
  -- reader can tell, so the served copy keeps the pace of the fastest clean pipeline and
  -- a dead owner holds nobody up
  for i = 1, #names do
    local ahead = chosen and redis.call('LLEN', own_seg(chosen, s)) or have
    if i ~= chosen and usable(i, s) and redis.call('LLEN', own_seg(i, s)) > ahead
        and extends(i, s, target, have) then
      chosen = i
    end
  end
  for i = 1, #names do
    if not chosen and usable(i, s) then chosen = i end
  end
  -- no clean copy: a defective one that is whole beats none
  for i = 1, #names do
    if not chosen and complete_in(i, s) then chosen = i end
  end
  if not chosen then
    for i = 1, #names do
      if redis.call('LLEN', own_seg(i, s)) > 0 and redis.call('EXISTS', alive(i)) == 1 then
        return 0
      end
    end
    return -1
  end
  local source = own_seg(chosen, s)
  local available = redis.call('LLEN', source)
  if chosen ~= owner then
    if available < have then return 0 end
    if not extends(chosen, s, target, have) then
      redis.call('DEL', target)
      have = 0
      gen = gen + 1
    end
    redis.call('HSET', owners, field, names[chosen] .. ':' .. gen)
    redis.call('EXPIRE', owners, window)
  end
  local complete = has_complete(redis.call('HGET', own_pos(chosen), rep), s)
  if available > have or chosen ~= owner then
    for j = have, available - 1 do
      redis.call('RPUSH', target, redis.call('LINDEX', source, j))
    end
    redis.call('EXPIRE', target, window)
    local last = complete and 1 or 0
    redis.call('HSET', served_pos, rep, s .. ':' .. (available - 1) .. ':' .. last)
    redis.call('EXPIRE', served_pos, window)
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*',
               'e', epoch_id, 'r', rep, 'n', s, 'k', available - 1, 'l', last)
  end
  if complete then return 1 end
  return 0
end

local s = seg
local current = redis.call('HGET', served_pos, rep)
if current then
  local cs, _, cf = parse(current)
  if cf then s = cs + 1 else s = cs end
end
while s <= seg and settle(s) ~= 0 do s = s + 1 end
return redis.call('EXISTS', KEYS[7])
"""


class PipelineStore:
    """One pipeline's side of a channel's manifest state, beside :class:`ChannelStore`."""

    def __init__(
        self, store: ChannelStore, name: str, pipelines: Sequence[str] = PIPELINES
    ) -> None:
        if name not in pipelines:
            raise ValueError(f"pipeline {name!r} is not one of {', '.join(pipelines)}")
        self.store = store
        self.name = name
        self.pipelines = tuple(pipelines)
        self.keys: ChannelKeys = store.keys
        self.own = store.keys.pipeline(name)
        self._claim = store.redis.register_script(CLAIM_EPOCH)
        self._publish = store.redis.register_script(PUBLISH)

    @property
    def redis(self) -> aioredis.Redis:
        return self.store.redis

    async def claim_epoch(self, candidate: Epoch, inits: dict[str, bytes], window_s: int) -> Epoch:
        """The channel's running epoch, or ``candidate`` made current when none runs.

        A joining pipeline must encode what the epoch announces: a different ladder
        would serve segments the MPD does not describe.
        """
        reps = list(inits)
        keys = [self.keys.epoch, self.keys.epochs, self.keys.position(candidate.id)]
        keys += [self.keys.init(candidate.id, rep) for rep in reps]
        args: list[str | bytes | int] = [candidate.to_json(), window_s, candidate.id]
        args += [inits[rep] for rep in reps]
        epoch = Epoch.from_json(await self._claim(keys=keys, args=args))
        if epoch.representations != candidate.representations:
            raise RuntimeError(
                f"pipeline {self.name}: the running epoch {epoch.id} has another ladder"
            )
        left = await self.redis.hgetall(self.own.position(epoch.id))
        async with self.redis.pipeline(transaction=True) as pipe:
            for rep, data in inits.items():
                pipe.set(self.own.init(epoch.id, rep), data, ex=window_s)
            for rep_id, raw in left.items():
                # what this pipeline was making when it died stays incomplete for good
                position = Position.decode(raw)
                if not position.complete:
                    field = f"{_text(rep_id)}:{position.segment}"
                    pipe.hset(self.own.defects(epoch.id), field, "abandoned: the pipeline died")
            pipe.expire(self.own.defects(epoch.id), window_s)
            await pipe.execute()
        return epoch

    async def publish_chunk(
        self,
        epoch: Epoch,
        rep: str,
        chunk: Chunk,
        defect: str | None,
        timeline: Timeline,
        window_s: int,
    ) -> bool:
        """Store a chunk as this pipeline's, and settle the served copy; see the module.

        Returns whether the channel's epoch is still on record (as
        :meth:`ChannelStore.publish_chunk`).
        """
        keys = [
            self.keys.prefix,
            self.keys.owners(epoch.id),
            self.keys.position(epoch.id),
            self.keys.init(epoch.id, rep),
            self.keys.epochs,
            self.keys.events,
            self.keys.epoch,
        ]
        me = self.pipelines.index(self.name) + 1
        args: list[bytes | str | int] = [chunk.data, window_s, rep, chunk.segment, chunk.chunk]
        args += [int(chunk.last), defect or "", epoch.id, EVENT_STREAM_LENGTH]
        args += [ALIVE_CHUNKS * timeline.chunk_ms, me]
        args += list(self.pipelines)
        return bool(await self._publish(keys=keys, args=args))

    async def leave(self, epoch: Epoch) -> None:
        """Stop serving: the other pipeline takes over at once; the last one ends the epoch."""
        await self.redis.delete(self.keys.alive(self.name))
        others = [self.keys.alive(p) for p in self.pipelines if p != self.name]
        if not await self.redis.exists(*others):
            await self.store.end_epoch(epoch)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def claim_lead_ms(segment_ms: int) -> int:
    """How far ahead of now a new epoch starts: a second pipeline started with the first
    (the supervisor starts them one after the other) still begins at frame 0, so the two
    make identical bytes from the start."""
    return segment_ms


def first_segment(epoch: Epoch, segment_ms: int, now_ms: int | None = None) -> int:
    """The first segment a pipeline joining ``epoch`` now can encode from its first frame."""
    elapsed = (clock.now_ms() if now_ms is None else now_ms) - epoch.start_ms
    return max(0, math.ceil(elapsed / segment_ms))
