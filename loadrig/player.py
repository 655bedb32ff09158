"""The virtual LL-DASH player: one coroutine per viewer, bodies counted, never kept.

:meth:`Player.run` does what dash.js does at the live edge: press play through the
gateway (``StartPlayback`` → ranked, signed edge URLs), fetch the MPD, sync its clock
with ``/time``, fetch the init segments, then request each segment when its first chunk
is due and read its chunks as they arrive (HTTP/1.1 chunked transfer).  The buffer model
and the rung choice live in :mod:`loadrig.abr`.  When an edge fails (connection error,
error status, no complete segment within ``segment_timeout_s``) the player moves to the
next URL it was given and carries on from the same segment.

Segments go over raw keep-alive asyncio connections with the llhttp response parser
(``httptools``, in C), one per track, like the edge bench's viewers (bench/_harness.py).
A player's cost is per chunk (five a second per track with 200 ms chunks), so that path
runs in the protocol callback with no task, timer or copy of its own: the scanner sees
a chunk's arrival from the box headers (a read inside an ``mdat`` is one comparison),
keeps only the 32-byte ``prft`` box and hands it over undecoded (the player decodes the
first of each segment, the one it measures delivery latency by), and the player updates
its buffer.  The coroutine wakes twice per segment (due, complete); a segment's fetches
are futures the protocol completes, not tasks.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import struct
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import httptools

from live.cmaf import read_prft_wallclock_ms
from loadrig.abr import BufferModel, ThroughputEstimate, choose_rung
from loadrig.manifest import LiveManifest, Track, parse_http_date_ms, parse_manifest
from loadrig.profile import Device, PlayerSettings

PANIC_BUFFER_S = 0.1
BEHIND_LIVE_SEGMENTS = 3  # further behind than this: jump back to the live point
RETRY_ROUNDS = 3  # times every edge URL is tried before the player gives up
START_ATTEMPTS = 6  # presses of play before a viewer gives up
START_BACKOFF_S = 0.5
TOO_EARLY_RETRIES = 5  # a segment not there yet: asked again this often, then next edge
MAX_PRFT_BYTES = 64  # a prft box is 28 or 32 bytes; it is the one box read whole
_BOX_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")


# (ordinal in the segment, bytes of the chunk, seconds from its first to last byte, the
# chunk's prft box or b"": decoded by the callback only when it uses it)
ChunkCallback = Callable[[int, int, float, bytes], None]


class PlayerError(Exception):
    """An edge or the gateway answered in a way a player cannot use (the message says how);
    ``retry_after_s``: the answer's ``Retry-After``, which the next attempt waits for."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooEarly(PlayerError):
    """A segment the edge does not have yet (404, or 503 after holding the request)."""


# -- records --------------------------------------------------------------------------


def _samples() -> array[float]:
    return array("d")


@dataclass(slots=True)
class PlayerRecord:
    """What one viewer saw.  ``state``: starting, playing, stalled, ended, failed.

    The per-segment samples grow for as long as the viewer watches, so they are arrays of
    doubles, not lists: 8 bytes a sample instead of 32 (a float object and its reference),
    and a full collection steps over an array at once where it visits every item of a
    list (thousands of viewers, an hour of segments each).
    """

    index: int
    device: str
    state: str = "starting"
    joined_at: float = 0.0
    startup_s: float | None = None
    stalls: list[float] = field(default_factory=list)
    latency_s: array[float] = field(default_factory=_samples)  # per segment, playhead vs live
    delivery_ms: array[float] = field(default_factory=_samples)  # per segment, prft -> arrival
    ttfb_ms: array[float] = field(default_factory=_samples)  # per segment request
    switches: int = 0
    failovers: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rungs: Counter[str] = field(default_factory=Counter)  # segments fetched per rung
    bytes: int = 0
    edge: str = ""
    buffer: BufferModel | None = None
    failover_gaps: list[float] = field(default_factory=list)  # edge failed -> next chunk, s
    failover_stalls: list[float] = field(default_factory=list)  # stall so far at that chunk


# -- segment connections ------------------------------------------------------------------


class BoxScanner:
    """Follows top-level ISO-BMFF boxes across reads; reports each completed chunk.

    A chunk is ``[prft] moof mdat``; when its ``mdat`` ends, ``on_chunk(ordinal, nbytes,
    burst_s, prft)`` is called.  Positions are kept as offsets into the body, so a read
    that lies inside a box's payload (most of an ``mdat``) costs one comparison; only an
    incomplete box header, or an incomplete ``prft`` box (32 bytes), is carried over to
    the next read.
    """

    __slots__ = (
        "chunk_at",
        "chunk_open",
        "chunk_start",
        "count",
        "in_mdat",
        "next_box",
        "offset",
        "on_chunk",
        "pending",
        "prft",
    )

    def __init__(self, on_chunk: ChunkCallback) -> None:
        self.on_chunk = on_chunk
        self.offset = 0  # body bytes fed so far
        self.next_box = 0  # body offset of the next box header
        self.pending = b""  # the unfinished header (or prft box) at the end of the last read
        self.in_mdat = False  # the box ending at next_box is an mdat: its end ends a chunk
        self.chunk_open = False
        self.chunk_at = 0  # body offset where the current chunk began
        self.chunk_start = 0.0  # when its first box header arrived
        self.prft = b""
        self.count = 0

    def feed(self, data: bytes, now: float) -> None:
        offset = self.offset + len(data)
        self.offset = offset
        next_box = self.next_box
        if next_box > offset:
            return  # inside a payload
        start = offset - len(data) - len(self.pending)  # body offset of data[0]
        if self.pending:
            data, self.pending = self.pending + data, b""
        end = len(data)
        while next_box <= offset:
            if self.in_mdat:
                self.in_mdat = False
                self._chunk_done(next_box, now)
            pos = next_box - start
            if end - pos < 8:
                self.pending = data[pos:]
                break
            size, kind = _BOX_HEADER.unpack_from(data, pos)
            header = 8
            if size == 1:
                if end - pos < 16:
                    self.pending = data[pos:]
                    break
                (size,) = _LARGE_SIZE.unpack_from(data, pos + 8)
                header = 16
            if size < header:
                raise ValueError(f"box {kind!r} of size {size} at body offset {next_box}")
            if kind == b"mdat":
                self.in_mdat = True
            elif kind == b"prft":
                if size > MAX_PRFT_BYTES:
                    raise ValueError(f"prft box of {size} bytes at body offset {next_box}")
                if end - pos < size:
                    self.pending = data[pos:]
                    break
                self.prft = data[pos : pos + size]
                self._chunk_opens(next_box, now)
            elif kind == b"moof" and not self.chunk_open:
                self._chunk_opens(next_box, now)
            next_box += size
        self.next_box = next_box

    def _chunk_opens(self, at: int, now: float) -> None:
        self.chunk_open = True
        self.chunk_at = at
        self.chunk_start = now

    def _chunk_done(self, end: int, now: float) -> None:
        self.on_chunk(self.count, end - self.chunk_at, now - self.chunk_start, self.prft)
        self.count += 1
        self.chunk_open = False
        self.prft = b""


class SegmentConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection: one GET at a time, body scanned for chunks."""

    __slots__ = (
        "bytes",
        "done",
        "first_byte",
        "keep_alive",
        "lost",
        "parser",
        "scanner",
        "status",
        "timer",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.done: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scanner: BoxScanner | None = None
        self.status = 0
        self.first_byte = 0.0
        self.bytes = 0
        self.keep_alive = True

    def send(
        self, request: bytes, scanner: BoxScanner | None, timeout_s: float
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.scanner = scanner
        self.status = 0
        self.first_byte = 0.0
        self.bytes = 0
        self.done = loop.create_future()
        self.timer = loop.call_later(timeout_s, self._end, TimeoutError("no complete response"))
        assert self.transport is not None
        self.transport.write(request)
        return self.done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._end(exc or ConnectionResetError("connection closed before the body ended"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        now = time.time()
        if not self.bytes:
            self.first_byte = now
        self.bytes += len(body)
        if self.scanner is not None:
            self.scanner.feed(body, now)

    def on_message_complete(self) -> None:
        self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.done is not None and not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
                if self.transport is not None:
                    self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class EdgeLink:
    """The player's connection to one edge for one track (reopened when closed)."""

    __slots__ = ("conn", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.conn: SegmentConnection | None = None

    async def connect(self, timeout_s: float) -> SegmentConnection:
        """The open keep-alive connection, (re)opened if the last one was closed."""
        conn = self.conn
        if conn is None or conn.lost or not conn.keep_alive:
            if conn is not None:
                conn.close()
            loop = asyncio.get_running_loop()
            _, conn = await asyncio.wait_for(  # type: ignore[assignment]
                loop.create_connection(SegmentConnection, self.host, self.port), timeout_s
            )
            self.conn = conn
        assert conn is not None
        return conn

    def request(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()

    async def get(
        self, path: str, scanner: BoxScanner | None, timeout_s: float
    ) -> SegmentConnection:
        """GET ``path``; the connection, its status and byte count set, once the body ended."""
        conn = await self.connect(timeout_s)
        await conn.send(self.request(path), scanner, timeout_s)
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- the player ---------------------------------------------------------------------------


@dataclass
class PlayerContext:
    """What the players of one worker process share."""

    gateway: str
    settings: PlayerSettings
    http: aiohttp.ClientSession
    tokens: list[str]  # access tokens of the account pool (reused)
    credentials: list[tuple[str, str]]  # (email, password) of the pool, for fresh sign-ins
    rng: random.Random = field(default_factory=random.Random)
    # media paths the players fetched (sans token), one set per worker rather than one per
    # viewer: every viewer of a rung fetches the same paths
    objects: set[str] = field(default_factory=set)


def gateway_error(status: int, body: object) -> str:
    """What a gateway refusal says, as one error kind of the report: the status and the
    error body's message with its numbers as N ("concurrency limit 27" and "... 31" are
    one kind), e.g. ``gateway 429: overloaded: concurrency limit N``."""
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else str(body)
    return f"gateway {status}: " + re.sub(r"\d+", "N", message)[:80]


async def _json(resp: aiohttp.ClientResponse) -> dict[str, object]:
    body = await resp.json(content_type=None)
    if resp.status != 200:
        retry_after = resp.headers.get("Retry-After", "")
        raise PlayerError(
            gateway_error(resp.status, body),
            float(retry_after) if retry_after.isdigit() else 0.0,
        )
    assert isinstance(body, dict)
    return body


async def press_play(ctx: PlayerContext, index: int) -> list[str]:
    """Sign in (or reuse a token) and StartPlayback; the ranked manifest URLs."""
    account = index % len(ctx.tokens)
    token = ctx.tokens[account]
    if ctx.settings.signin_share and ctx.rng.random() < ctx.settings.signin_share:
        email, password = ctx.credentials[account]
        async with ctx.http.post(
            f"{ctx.gateway}/v1/accounts:signIn", json={"email": email, "password": password}
        ) as resp:
            token = str((await _json(resp))["accessToken"])
    async with ctx.http.post(
        f"{ctx.gateway}/v1/playback:start",
        json={"content": ctx.settings.content},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        session = (await _json(resp))["session"]
    assert isinstance(session, dict)
    urls = [str(u["url"]) for u in session.get("manifestUrls", [])]
    if not urls:
        raise PlayerError("StartPlayback returned no manifest URL")
    return urls


class Player:
    """One viewer's state across edges; :meth:`run` is its coroutine.

    Slotted, as are its record, buffer model and connections: thousands of them share a
    process, and the per-chunk path touches each of them five times a second.
    """

    __slots__ = (
        "buffer",
        "clock_synced",
        "ctx",
        "device",
        "estimate",
        "failed_at",
        "inits",
        "kinds",
        "links",
        "mpd",
        "number",
        "offset_s",
        "pressed",
        "rec",
        "rung",
        "stale_mpd",
        "track_end",
    )

    def __init__(self, ctx: PlayerContext, record: PlayerRecord, device: Device) -> None:
        self.ctx = ctx
        self.rec = record
        self.device = device
        s = ctx.settings
        self.buffer = BufferModel(
            s.live_delay_s, s.start_buffer_s, s.resume_buffer_s, s.catchup_rate
        )
        record.buffer = self.buffer
        self.estimate = ThroughputEstimate(cap_bps=device.bandwidth_kbps * 1000)
        self.offset_s = 0.0  # server clock minus ours
        self.clock_synced = False  # the UTCTiming source was asked (answered or not)
        self.pressed = 0.0
        self.mpd: LiveManifest | None = None
        self.track_end: dict[str, float] = {}
        self.rung = ""
        self.number = -1
        self.links: list[EdgeLink] = []
        self.failed_at: float | None = None  # when the last edge failed, until new media
        self.inits: dict[str, str] = {}  # track -> rung whose init segment was read
        self.stale_mpd = False  # an epoch change was seen: read the MPD again
        self.kinds: tuple[str, ...] = ("video",)  # the tracks played: media plays once in all

    def now(self) -> float:
        return time.time() + self.offset_s

    def observe(self) -> str:
        """The viewer's state now (a stall shows even when no chunk has arrived since)."""
        rec = self.rec
        if rec.state in ("playing", "stalled") and self.mpd is not None:
            now = self.now()
            self.buffer.advance(now, self.live_edge(now))
            rec.state = "playing" if self.buffer.playing else "stalled"
        return rec.state

    def live_edge(self, now: float) -> float:
        assert self.mpd is not None
        return now - self.mpd.ast_s

    async def run(self, given: list[str] | None = None) -> None:
        """Press play (or use the ``given`` manifest URLs) and watch until cancelled."""
        rec = self.rec
        self.pressed = time.time()
        rec.joined_at = self.pressed
        urls: list[str] = list(given or [])
        for attempt in range(0 if urls else START_ATTEMPTS):
            try:
                urls = await press_play(self.ctx, rec.index)
                break
            except (aiohttp.ClientError, PlayerError, TimeoutError, OSError) as exc:
                rec.errors[f"start: {type(exc).__name__}: {exc}"[:100]] += 1
                # a player app's retry: exponential backoff with full jitter, and never
                # sooner than the gateway's Retry-After (a shed press-play says when)
                backoff = self.ctx.rng.uniform(0, START_BACKOFF_S * 2**attempt)
                after = exc.retry_after_s if isinstance(exc, PlayerError) else 0.0
                await asyncio.sleep(max(backoff, after))
        if not urls:
            rec.state = "failed"
            return
        try:
            await self._play(urls)
        finally:
            for link in self.links:
                link.close()
            if self.mpd is not None:
                now = self.now()
                self.buffer.finish(now, self.live_edge(now))
            rec.stalls = list(self.buffer.stalls)

    async def _play(self, urls: list[str]) -> None:
        rec = self.rec
        failures = 0
        index = 0
        while failures < RETRY_ROUNDS * len(urls):
            url = urls[index % len(urls)]
            rec.edge = urlsplit(url).netloc
            try:
                await self._session(url)
                return
            except (
                OSError,
                TimeoutError,
                PlayerError,
                aiohttp.ClientError,
                httptools.HttpParserError,
                ValueError,
            ) as exc:
                rec.errors[f"{type(exc).__name__}: {exc}"[:60]] += 1
                for link in self.links:
                    link.close()
                failures += 1
                index += 1
                if self.buffer.playhead is not None or self.number >= 0:
                    rec.failovers += 1
                    if self.failed_at is None:
                        self.failed_at = time.time()
        rec.state = "failed"

    async def _session(self, url: str) -> None:
        """Play from the edge behind ``url`` until cancelled (raises when the edge fails)."""
        ctx, rec = self.ctx, self.rec
        timeout = aiohttp.ClientTimeout(total=ctx.settings.segment_timeout_s)
        if self.mpd is None or self.stale_mpd:
            async with ctx.http.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise PlayerError(f"MPD {resp.status}")
                mpd = parse_manifest(await resp.text())
            if self.mpd is None or mpd.video.media != self.mpd.video.media:
                self.number = -1  # a new epoch: start again at the live point
                self.inits.clear()
            self.mpd, self.stale_mpd = mpd, False
        # on failover the MPD and the init segments already read stay valid (URLs are
        # immutable): the next edge is only a new base URL, as DASH's BaseURL failover is
        mpd = self.mpd
        if mpd.time_urls and not self.clock_synced:
            await self._sync_clock(mpd.time_urls, timeout)
        split = urlsplit(url)
        assert split.hostname is not None and split.port is not None
        base = split.path.rsplit("/", 1)[0]  # /t/TOKEN/live/CHANNEL
        tracks: list[tuple[str, Track]] = [("video", mpd.video)]
        if ctx.settings.audio and mpd.audio is not None:
            tracks.append(("audio", mpd.audio))
        self.links = [EdgeLink(split.hostname, split.port) for _ in tracks]
        self.kinds = tuple(kind for kind, _track in tracks)
        audio_rung = mpd.audio.rungs[0][0] if mpd.audio is not None else ""
        inits = self.inits
        if self.number < 0:
            live = self.live_edge(self.now())
            self.number = max(0, math.floor((live - ctx.settings.live_delay_s) / mpd.segment_s))
        early = 0
        while True:
            now = self.now()
            behind = math.floor(self.live_edge(now) / mpd.segment_s) - self.number
            if behind > BEHIND_LIVE_SEGMENTS:  # fell off the live edge: seek to live
                rec.errors["jumped to live"] += 1
                self.number = math.floor(
                    (self.live_edge(now) - ctx.settings.live_delay_s) / mpd.segment_s
                )
                self.buffer.finish(now, self.live_edge(now))  # an ongoing stall ends here
                self.buffer.playhead = self.buffer.start_point = None
                self.buffer.received_end = 0.0
                self.track_end.clear()
            wait = mpd.segment_available_s(self.number) - now
            if wait > 0:
                await asyncio.sleep(wait)  # a timer: the segment is not due yet
            rung = choose_rung(
                mpd.video.rungs,
                self.estimate.bps,
                self.buffer.level,
                self.rung or None,
                panic_buffer_s=PANIC_BUFFER_S,
                max_rung=self.device.max_rung,
            )
            if self.rung and rung != self.rung:
                rec.switches += 1
            self.rung = rung
            rungs = {"video": rung, "audio": audio_rung}
            for (kind, track), link in zip(tracks, self.links, strict=True):
                if inits.get(kind) != rungs[kind]:
                    conn = await link.get(
                        f"{base}/{track.init_path(rungs[kind])}",
                        None,
                        ctx.settings.segment_timeout_s,
                    )
                    if conn.status != 200:
                        raise PlayerError(f"init {conn.status}")
                    rec.bytes += conn.bytes
                    inits[kind] = rungs[kind]
            try:
                await self._segment(base, tracks, rungs)
            except TooEarly as exc:  # dash.js asks again a chunk later, on the same edge
                rec.errors[f"{type(exc).__name__}: {exc}"] += 1
                early += 1
                if early > TOO_EARLY_RETRIES:
                    raise
                await asyncio.sleep(mpd.chunk_s)
                continue
            early = 0
            self.number += 1

    async def _sync_clock(self, time_urls: Sequence[str], timeout: aiohttp.ClientTimeout) -> None:
        """Set the clock offset from the MPD's UTCTiming sources, once per viewer.

        As dash.js does, the sources are tried in order until one answers; one that does
        not is an error to count, not a reason to stop playing. With none answering,
        dash.js falls back (to the MPD's Date header, then the device clock); the rig
        keeps the device clock, exact on one machine."""
        self.clock_synced = True
        for time_url in time_urls:
            try:
                t0 = time.time()
                async with self.ctx.http.get(time_url, timeout=timeout) as resp:
                    server_ms = parse_http_date_ms(await resp.text())
                t1 = time.time()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                self.rec.errors[f"time sync: {type(exc).__name__}"] += 1
                continue
            self.offset_s = server_ms / 1000 - (t0 + t1) / 2
            return

    async def _segment(
        self, base: str, tracks: list[tuple[str, Track]], rungs: dict[str, str]
    ) -> None:
        """Fetch segment ``self.number`` of every track at once, chunk by chunk."""
        rec, mpd, number = self.rec, self.mpd, self.number
        assert mpd is not None
        timeout_s = self.ctx.settings.segment_timeout_s
        sent = time.time()
        conns = [await link.connect(timeout_s) for link in self.links]
        bodies = []
        for (kind, track), link, conn in zip(tracks, self.links, conns, strict=True):
            path = track.media_path(rungs[kind], number)
            self.ctx.objects.add(path)
            scanner = BoxScanner(self._on_chunk_of(kind, number, mpd))
            bodies.append(conn.send(link.request(f"{base}/{path}"), scanner, timeout_s))
        # futures, completed by the protocol: no task per fetch (and no gather for one track)
        await (bodies[0] if len(bodies) == 1 else asyncio.gather(*bodies))
        for conn in conns:
            if conn.status == 410:  # behind the window: a new epoch, most likely
                self.stale_mpd = True
            if conn.status in (404, 503):
                raise TooEarly(f"segment status {conn.status}")
            if conn.status != 200:
                raise PlayerError(f"segment status {conn.status}")
            rec.bytes += conn.bytes
        rec.ttfb_ms.append((conns[0].first_byte - sent) * 1000)
        rec.rungs[rungs["video"]] += 1
        now = self.now()
        latency = self.buffer.latency(self.live_edge(now))
        if latency is not None:
            rec.latency_s.append(latency)

    def _on_chunk_of(self, kind: str, number: int, mpd: LiveManifest) -> ChunkCallback:
        """The per-chunk update of track ``kind``'s segment ``number``: runs for every chunk
        of every viewer, in the protocol callback, so it does only the arithmetic it must."""
        start = number * mpd.segment_s
        video = kind == "video"
        track_end = self.track_end
        rec, buffer = self.rec, self.buffer

        def on_chunk(ordinal: int, nbytes: int, burst_s: float, prft: bytes) -> None:
            now = time.time() + self.offset_s
            live_edge = now - mpd.ast_s
            end = start + min((ordinal + 1) * mpd.chunk_s, mpd.segment_s)
            if end > track_end.get(kind, 0.0):
                track_end[kind] = end
            if video:
                self.estimate.add(nbytes, burst_s)
                if ordinal == 0 and prft:
                    rec.delivery_ms.append(now * 1000 - read_prft_wallclock_ms(prft))
            playable = min([track_end.get(k, 0.0) for k in self.kinds])
            if self.failed_at is not None:  # the first media from the next edge
                buffer.advance(now, live_edge)
                rec.failover_gaps.append(time.time() - self.failed_at)
                since = buffer.stall_since
                rec.failover_stalls.append(0.0 if since is None else now - since)
                self.failed_at = None
            was_started = buffer.playhead is not None
            buffer.on_media(playable, now, live_edge)
            if buffer.playing:
                rec.state = "playing"
                if not was_started and rec.startup_s is None:
                    rec.startup_s = time.time() - self.pressed
            else:
                rec.state = "stalled" if buffer.playhead is not None else "starting"

        return on_chunk
