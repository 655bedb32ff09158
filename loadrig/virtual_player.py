"""The virtual LL-DASH player: one coroutine per viewer, bodies counted, never kept.

:meth:`VirtualPlayer.run` does what dash.js does at the live edge: press play through the
gateway (:mod:`loadrig.press_play`: ``StartPlayback`` → ranked, signed edge URLs), fetch
the MPD, sync its clock with ``/time``, fetch the init segments, then request each segment
when its first chunk is due and read its chunks as they arrive (HTTP/1.1 chunked transfer,
over :mod:`loadrig.segment_connection`).  The buffer model and the rung choice live in
:mod:`loadrig.abr`; what each chunk's arrival does to the viewer's state, in
:mod:`loadrig.playback_state`.  When an edge fails (connection error, error status, no
complete segment within ``segment_timeout_s``) the player moves to the next URL it was
given and carries on from the same segment; once every URL has failed, it waits
(jittered, doubling up to :data:`RETRY_MAX_S`, as an origin outage's ``Retry-After``)
and goes round again, giving up only after :data:`GIVE_UP_S` with no media at all: an
origin that loses its state store for seconds answers 503 throughout, and a player
that gave up after three quick tries would not be there when it comes back.  More than
the MPD's ``Latency@max`` behind (after such a stall), it jumps back to the live point,
as dash.js seeks past its maximum drift.  The coroutine wakes twice per segment (due,
complete); a segment's fetches are futures the protocol completes, not tasks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp
import httptools

from kernel.isobmff import ChunkScanner
from loadrig.abr import choose_rung
from loadrig.manifest import Track, parse_http_date_ms, parse_manifest
from loadrig.playback_state import PlaybackState
from loadrig.player_context import PlayerContext
from loadrig.player_record import PlayerRecord
from loadrig.press_play import PlayerError, Started, press_until_answered
from loadrig.scenario import Device
from loadrig.segment_connection import EdgeLink

PANIC_BUFFER_S = 0.1
BEHIND_LIVE_SEGMENTS = 3  # further behind than this: jump back to the live point
# every edge URL failed: the pause before the next round, b·U[0, 1) with b doubling
# from RETRY_FIRST_S to RETRY_MAX_S (the origin's Retry-After during an outage is 2 s)
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
GIVE_UP_S = 60.0  # failing this long with no media in between, the viewer leaves
PLAY_FAILURES = (OSError, TimeoutError, PlayerError, aiohttp.ClientError,
                 httptools.HttpParserError, ValueError)  # fmt: skip
TOO_EARLY_RETRIES = 5  # a segment not there yet: asked again this often, then next edge


class TooEarly(PlayerError):
    """A segment the edge does not have yet (404, or 503 after holding the request)."""


class VirtualPlayer(PlaybackState):
    """One viewer across edges: :meth:`run` is its coroutine; the state each chunk moves is
    :class:`PlaybackState`'s.  Slotted like it: thousands of viewers share a process."""

    __slots__ = (
        "clock_synced",
        "ctx",
        "device",
        "inits",
        "links",
        "number",
        "rung",
        "stale_mpd",
    )

    def __init__(self, ctx: PlayerContext, record: PlayerRecord, device: Device) -> None:
        super().__init__(ctx.settings, record, device)
        self.ctx = ctx
        self.device = device
        self.clock_synced = False  # the UTCTiming source was asked (answered or not)
        self.rung = ""
        self.number = -1
        self.links: list[EdgeLink] = []
        self.inits: dict[str, str] = {}  # track -> rung whose init segment was read
        self.stale_mpd = False  # an epoch change was seen: read the MPD again

    async def run(self, given: list[str] | None = None) -> None:
        """Press play (or use the ``given`` manifest URLs) and watch until cancelled."""
        rec = self.rec
        self.pressed = time.time()
        rec.joined_at = self.pressed
        started = Started(list(given)) if given else await self._start()
        urls, rec.session = started.urls, started.session_id
        if started.target_latency_s > 0:  # the session's experiment cell asks for its own
            self.buffer.live_delay_s = started.target_latency_s
        rec.mark("press")
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

    async def _start(self) -> Started:
        """Press play until the gateway answers (:func:`press_until_answered`)."""
        return await press_until_answered(self.ctx, self.rec)

    async def _play(self, urls: list[str]) -> None:
        """Play from ``urls`` in turn: the next one at once when one fails, a pause after
        each round in which all failed, until :data:`GIVE_UP_S` passes with no media."""
        rec = self.rec
        index = rounds = 0
        failing_since: float | None = None
        while True:
            url = urls[index % len(urls)]
            rec.edge = urlsplit(url).netloc
            received = rec.bytes
            try:
                await self._session(url)
                return
            except PLAY_FAILURES as exc:
                rec.errors[f"{type(exc).__name__}: {exc}"[:60]] += 1
                for link in self.links:
                    link.close()
                index += 1
                if self.buffer.playhead is not None or self.number >= 0:
                    rec.failovers += 1
                    if self.failed_at is None:
                        self.failed_at = time.time()
            now = time.monotonic()
            if failing_since is None or rec.bytes != received:  # media since: a new failure
                failing_since, rounds = now, 0
            if now - failing_since >= GIVE_UP_S:
                break
            if index % len(urls) == 0:  # a round in which every URL failed
                pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2**rounds)
                rounds += 1
                await asyncio.sleep(self.ctx.rng.uniform(0, pause))  # a timer: the backoff
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
        rec.mark("mpd")
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
            self.number = max(0, math.floor((live - self.buffer.live_delay_s) / mpd.segment_s))
        early = 0
        while True:
            now = self.now()
            behind = math.floor(self.live_edge(now) / mpd.segment_s) - self.number
            latency = self.buffer.latency(self.live_edge(now))
            if behind > BEHIND_LIVE_SEGMENTS or (
                latency is not None and latency > mpd.max_latency_s
            ):  # fell off the live edge, or too far behind it after a stall: seek to live
                rec.errors["jumped to live"] += 1
                self.number = math.floor(
                    (self.live_edge(now) - self.buffer.live_delay_s) / mpd.segment_s
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
            rec.mark("init")
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
            scanner = ChunkScanner(self._on_chunk_of(kind, number, mpd))
            query = self._cmcd(kind, track, rungs[kind])
            bodies.append(conn.send(link.request(f"{base}/{path}?{query}"), scanner, timeout_s))
        self.stalls_seen = len(self.buffer.stalls)
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
