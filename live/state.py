"""Manifest state and the live window of a channel, kept in Redis (DESIGN.md §4).

Key names come from :mod:`kernel.keys` (each carries the hash tag ``{channel}``, so a
channel lives in one Redis Cluster slot and a MULTI over its keys stays atomic).

A chunk is published in one script, atomically: bytes appended, position moved, event
added. So a reader never sees a position (or an event) whose bytes are not stored. The
script is idempotent: the clients retry a command whose connection dropped, and a chunk
the server had stored before the drop is not appended a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import get_channel_config
from kernel.epoch import Epoch, Position
from kernel.keys import ChannelKeys

EVENT_STREAM_LENGTH = 5000

# KEYS: segment, position, init, epochs, events, epoch
# ARGV: bytes, window_s, rep, position, chunk index, e, n, l, stream length
# Returns whether the epoch is on record. A segment already longer than the chunk's index
# holds it: a retried publish of a chunk the server stored before the reply was lost.
PUBLISH_CHUNK = """
if redis.call('LLEN', KEYS[1]) <= tonumber(ARGV[5]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  if ARGV[5] == '0' then
    redis.call('EXPIRE', KEYS[3], ARGV[2])
    redis.call('EXPIRE', KEYS[4], ARGV[2])
  end
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*',
             'e', ARGV[6], 'r', ARGV[3], 'n', ARGV[7], 'k', ARGV[5], 'l', ARGV[8])
end
return redis.call('EXISTS', KEYS[6])
"""

# The byte sizes of a list's elements without sending the elements: an LL-HLS playlist
# addresses parts by byte range, and a video segment's chunks are megabytes together.
# KEYS[1] is the position hash (read in the same script, so sizes and position agree).
PLAYLIST_READ = """
local out = {redis.call('HGETALL', KEYS[1])}
for i = 2, #KEYS do
  local sizes = {}
  for j, chunk in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do sizes[j] = #chunk end
  out[i] = sizes
end
return out
"""

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE/XREAD entries, undecoded


@dataclass(frozen=True)
class ChunkEvent:
    """A chunk was published; carries where, not the bytes."""

    stream_id: str
    epoch: str
    rep: str
    segment: int
    chunk: int
    last: bool


@dataclass(frozen=True)
class SegmentCopy:
    """A segment's served chunks as read together with what tells whose they are."""

    chunks: list[bytes]
    position: Position | None  # the rendition's live edge
    generation: int  # which copy the chunks are (:meth:`ChannelStore.generation`)


class ChannelStore:
    """Reads and writes one channel's manifest state and live window."""

    def __init__(self, redis: aioredis.Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.keys = ChannelKeys(channel)
        self._publish = redis.register_script(PUBLISH_CHUNK)
        self._playlist_read = redis.register_script(PLAYLIST_READ)

    # -- writer side (the packager) -------------------------------------------------

    async def start_epoch(
        self, epoch: Epoch, inits: dict[str, bytes], window_s: int, fresh: bool = True
    ) -> None:
        """Make ``epoch`` current, with its init segments, in one transaction.

        ``fresh=False`` re-announces a running epoch (after Redis lost it) and keeps
        whatever position it has stored since.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            for rep_id, data in inits.items():
                pipe.set(self.keys.init(epoch.id, rep_id), data, ex=window_s)
            pipe.hset(self.keys.epochs, epoch.id, epoch.to_json())
            pipe.expire(self.keys.epochs, window_s)
            if fresh:
                pipe.delete(self.keys.position(epoch.id))
            pipe.set(self.keys.epoch, epoch.to_json())
            await pipe.execute()

    async def publish_chunk(
        self,
        epoch: Epoch,
        rep: str,
        segment: int,
        chunk: int,
        data: bytes,
        last: bool,
        window_s: int,
    ) -> bool:
        """Store one chunk and announce it, atomically.

        Returns whether the channel's epoch was still on record: False means Redis lost
        it (a restart keeps nothing) and the caller should announce it again.
        """
        keys = [
            self.keys.segment(epoch.id, rep, segment),
            self.keys.position(epoch.id),
            self.keys.init(epoch.id, rep),  # kept alive as long as its media (chunk 0)
            self.keys.epochs,
            self.keys.events,
            self.keys.epoch,
        ]
        position = Position(segment, chunk, last).encode()
        args: list[bytes | str | int] = [data, window_s, rep, position, chunk, epoch.id]
        args += [segment, int(last), EVENT_STREAM_LENGTH]
        epoch_on_record = await self._publish(keys=keys, args=args)
        return bool(epoch_on_record)

    async def end_epoch(self, epoch: Epoch) -> None:
        """Take the channel off air: every rendition's last segment is final as it stands.

        The epoch's media stays readable until its TTL; readers waiting on a segment
        that will never grow are woken by a closing event.
        """
        pos_key = self.keys.position(epoch.id)
        positions = await self.redis.hgetall(pos_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            for rep, raw in positions.items():
                final = Position.decode(raw)
                pipe.hset(pos_key, rep, Position(final.segment, final.chunk, True).encode())
                pipe.xadd(
                    self.keys.events,
                    {"e": epoch.id, "r": rep, "n": final.segment, "k": final.chunk, "l": 1},
                    maxlen=EVENT_STREAM_LENGTH,
                    approximate=True,
                )
            pipe.delete(self.keys.epoch)
            await pipe.execute()

    # -- reader side (origin, MPD) ----------------------------------------------------

    async def get_config(self) -> ChannelConfig | None:
        return await get_channel_config(self.redis, self.channel)

    async def current_epoch(self) -> Epoch | None:
        raw = await self.redis.get(self.keys.epoch)
        return Epoch.from_json(raw) if raw else None

    async def find_epoch(self, epoch_id: str) -> Epoch | None:
        """The current or a recent epoch by id, while its media is in the window."""
        raw = await self.redis.hget(self.keys.epochs, epoch_id)
        return Epoch.from_json(raw) if raw else None

    async def position(self, epoch_id: str, rep: str) -> Position | None:
        raw = await self.redis.hget(self.keys.position(epoch_id), rep)
        return Position.decode(raw) if raw else None

    async def init_segment(self, epoch_id: str, rep: str) -> bytes | None:
        data = await self.redis.get(self.keys.init(epoch_id, rep))
        return _bytes(data) if data is not None else None

    async def chunks(
        self, epoch_id: str, rep: str, segment: int, first: int = 0
    ) -> tuple[list[bytes], Position | None]:
        """Chunks ``first..`` of a segment and the rendition's position, read together."""
        copy = await self.segment_copy(epoch_id, rep, segment, first)
        return copy.chunks, copy.position

    async def segment_copy(
        self, epoch_id: str, rep: str, segment: int, first: int = 0
    ) -> SegmentCopy:
        """Chunks ``first..`` of a segment, the rendition's position and the generation of
        the copy the chunks are from, read together (one round trip, one transaction)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self.keys.segment(epoch_id, rep, segment), first, -1)
            pipe.hget(self.keys.position(epoch_id), rep)
            pipe.hget(self.keys.owners(epoch_id), f"{rep}:{segment}")
            data, raw_pos, owner = await pipe.execute()
        position = Position.decode(raw_pos) if raw_pos else None
        return SegmentCopy(data, position, _generation(owner))

    async def generation(self, epoch_id: str, rep: str, segment: int) -> int:
        """Which copy of a segment is served (0: the first, or the only one): redundant
        pipelines (:mod:`live.pipelines`) may replace a segment whose pipeline failed, and a
        reader that sent the old copy's first bytes must not go on with the new copy's."""
        return _generation(await self.redis.hget(self.keys.owners(epoch_id), f"{rep}:{segment}"))

    async def positions_and_sizes(
        self, epoch_id: str, rep: str, segments: list[int]
    ) -> tuple[dict[str, Position], dict[int, list[int]]]:
        """Every rendition's position, and the chunk sizes of ``rep``'s ``segments``, atomically."""
        keys = [self.keys.position(epoch_id)]
        keys += [self.keys.segment(epoch_id, rep, n) for n in segments]
        reply = await self._playlist_read(keys=keys)
        flat, *sizes = cast(list[list[bytes | int]], reply)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        positions = {_text(cast(bytes, k)): Position.decode(cast(bytes, v)) for k, v in pairs}
        found = {n: [int(s) for s in sz] for n, sz in zip(segments, sizes, strict=True) if sz}
        return positions, found

    async def last_event_id(self) -> str:
        """The id of the newest event, so a reader can start listening from now."""
        newest = cast(StreamEntries, await self.redis.xrevrange(self.keys.events, count=1))
        return newest[0][0].decode() if newest else "0-0"

    async def events(self, after: str = "$", block_ms: int = 5000) -> AsyncIterator[ChunkEvent]:
        """Every chunk event after ``after``, as it happens (a blocking XREAD, not a poll)."""
        cursor = await self.last_event_id() if after == "$" else after
        while True:
            reply = cast(
                list[tuple[bytes, StreamEntries]],
                await self.redis.xread({self.keys.events: cursor}, block=block_ms, count=500),
            )
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    cursor = entry_id.decode()
                    yield ChunkEvent(
                        stream_id=cursor,
                        epoch=fields[b"e"].decode(),
                        rep=fields[b"r"].decode(),
                        segment=int(fields[b"n"]),
                        chunk=int(fields[b"k"]),
                        last=fields[b"l"] == b"1",
                    )


def _generation(owner: bytes | str | None) -> int:
    """The generation in an owners field ("pipeline:generation"); 0 where none is."""
    return int(_text(owner).rsplit(":", 1)[1]) if owner else 0


def _text(raw: bytes | str) -> str:
    """A reply as text: the client may or may not be set to decode responses."""
    return raw.decode() if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw
