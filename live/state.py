"""Manifest state and the live window of a channel, kept in Redis (DESIGN.md §4).

Keys (every one carries the hash tag ``{channel}`` so a channel lives in one
Redis Cluster slot and a MULTI over its keys stays atomic):

==================================  ==========================================
``lm:{ch}:config``                  :class:`ChannelConfig` as JSON
``lm:{ch}:epoch``                   the current :class:`Epoch` as JSON
``lm:{ch}:epochs``                  hash epoch id -> :class:`Epoch` JSON (TTL window)
``lm:{ch}:pos:{epoch}``             hash rendition -> "segment:chunk:complete"
``lm:{ch}:init:{epoch}:{rep}``      init segment bytes
``lm:{ch}:seg:{epoch}:{rep}:{n}``   list of the chunk bytes of segment ``n``
``lm:{ch}:events``                  stream, one entry per published chunk
==================================  ==========================================

A chunk is published in one MULTI: bytes appended, position moved, event added.
So a reader never sees a position (or an event) whose bytes are not stored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import cast

import redis.asyncio as aioredis

from live.ladder import ChannelConfig

EVENT_STREAM_LENGTH = 5000

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE/XREAD entries, undecoded


@dataclass(frozen=True)
class Representation:
    """One published rendition of an epoch, as the encoder actually made it."""

    id: str
    kind: str  # "video" or "audio"
    codecs: str  # RFC 6381 codec string, e.g. "avc1.64001f", "mp4a.40.2"
    bandwidth: int
    timescale: int
    width: int = 0
    height: int = 0
    frame_rate: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True)
class Epoch:
    """One uninterrupted encoder run: its id is a path component of every URL it serves."""

    id: str
    start_ms: int  # wall-clock (UTC, ms) of media time 0
    representations: tuple[Representation, ...]

    def representation(self, rep_id: str) -> Representation | None:
        return next((r for r in self.representations if r.id == rep_id), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Epoch:
        raw = json.loads(text)
        reps = tuple(Representation(**r) for r in raw["representations"])
        return cls(id=raw["id"], start_ms=raw["start_ms"], representations=reps)


@dataclass(frozen=True)
class Position:
    """How far a rendition has got: the newest chunk stored, and whether its segment is whole."""

    segment: int
    chunk: int
    complete: bool

    def encode(self) -> str:
        return f"{self.segment}:{self.chunk}:{int(self.complete)}"

    @classmethod
    def decode(cls, text: str | bytes) -> Position:
        segment, chunk, complete = (text.decode() if isinstance(text, bytes) else text).split(":")
        return cls(int(segment), int(chunk), complete == "1")

    def has_complete(self, segment: int) -> bool:
        return segment < self.segment or (segment == self.segment and self.complete)


@dataclass(frozen=True)
class ChunkEvent:
    """A chunk was published; carries where, not the bytes."""

    stream_id: str
    epoch: str
    rep: str
    segment: int
    chunk: int
    last: bool


class ChannelKeys:
    """Names of one channel's keys; the only place they are spelled out."""

    def __init__(self, channel: str) -> None:
        self.prefix = f"lm:{{{channel}}}"

    @property
    def config(self) -> str:
        return f"{self.prefix}:config"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def epochs(self) -> str:
        return f"{self.prefix}:epochs"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def position(self, epoch: str) -> str:
        return f"{self.prefix}:pos:{epoch}"

    def init(self, epoch: str, rep: str) -> str:
        return f"{self.prefix}:init:{epoch}:{rep}"

    def segment(self, epoch: str, rep: str, number: int) -> str:
        return f"{self.prefix}:seg:{epoch}:{rep}:{number}"


class ChannelStore:
    """Reads and writes one channel's manifest state and live window."""

    def __init__(self, redis: aioredis.Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.keys = ChannelKeys(channel)

    # -- writer side (the packager) -------------------------------------------------

    async def put_config(self, config: ChannelConfig) -> None:
        await self.redis.set(self.keys.config, config.to_json())

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
        seg_key = self.keys.segment(epoch.id, rep, segment)
        pos_key = self.keys.position(epoch.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(seg_key, data)
            pipe.expire(seg_key, window_s)
            pipe.hset(pos_key, rep, Position(segment, chunk, last).encode())
            pipe.expire(pos_key, window_s)
            if chunk == 0:  # keep the epoch's init and description alive as long as its media
                pipe.expire(self.keys.init(epoch.id, rep), window_s)
                pipe.expire(self.keys.epochs, window_s)
            pipe.xadd(
                self.keys.events,
                {"e": epoch.id, "r": rep, "n": segment, "k": chunk, "l": int(last)},
                maxlen=EVENT_STREAM_LENGTH,
                approximate=True,
            )
            pipe.exists(self.keys.epoch)
            *_, epoch_on_record = await pipe.execute()
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
        raw = await self.redis.get(self.keys.config)
        return ChannelConfig.from_json(_text(raw)) if raw else None

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
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self.keys.segment(epoch_id, rep, segment), first, -1)
            pipe.hget(self.keys.position(epoch_id), rep)
            data, raw_pos = await pipe.execute()
        return data, Position.decode(raw_pos) if raw_pos else None

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


def _text(raw: bytes | str) -> str:
    """A reply as text: the client may or may not be set to decode responses."""
    return raw.decode() if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw
