"""A viewer's playback state and what one chunk's arrival does to it (the hot path).

:class:`PlaybackState` holds what the per-chunk path reads and writes: the buffer model and
the throughput estimate (:mod:`loadrig.abr`), the clock offset, each track's received end,
the failover mark.  :meth:`PlaybackState._on_chunk_of` makes the callback the scanner
(:class:`kernel.isobmff.ChunkScanner`) calls for every chunk of every viewer, in the
protocol callback: the scanner sees a chunk's arrival from the box headers (a read inside
an ``mdat`` is one comparison), keeps only the 32-byte ``prft`` box and hands it over
undecoded (the first of each segment is decoded, the one delivery latency is measured by).
:class:`loadrig.virtual_player.VirtualPlayer` adds the network steps on top.
"""

from __future__ import annotations

import time

from kernel.isobmff import ChunkCallback, read_prft_wallclock_ms
from loadrig.abr import BufferModel, ThroughputEstimate
from loadrig.cmcd import cmcd_query
from loadrig.manifest import LiveManifest, Track
from loadrig.player_record import PlayerRecord
from loadrig.scenario import Device, PlayerSettings


class PlaybackState:
    """One viewer's buffer, throughput, clock and tracks, moved by each chunk's arrival.

    Slotted, as are its record, buffer model and connections: thousands of them share a
    process, and the per-chunk path touches each of them five times a second.
    """

    __slots__ = (
        "buffer",
        "estimate",
        "failed_at",
        "kinds",
        "mpd",
        "offset_s",
        "pressed",
        "rec",
        "stalls_seen",
        "track_end",
    )

    def __init__(self, settings: PlayerSettings, record: PlayerRecord, device: Device) -> None:
        self.rec = record
        self.buffer = BufferModel(
            settings.live_delay_s,
            settings.start_buffer_s,
            settings.resume_buffer_s,
            settings.catchup_rate,
        )
        record.buffer = self.buffer
        self.estimate = ThroughputEstimate(cap_bps=device.bandwidth_kbps * 1000)
        self.offset_s = 0.0  # server clock minus ours
        self.pressed = 0.0
        self.mpd: LiveManifest | None = None
        self.track_end: dict[str, float] = {}
        self.failed_at: float | None = None  # when the last edge failed, until new media
        self.kinds: tuple[str, ...] = ("video",)  # the tracks played: media plays once in all
        self.stalls_seen = 0  # finished stalls already told to the edge (CMCD bs)

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

    def _cmcd(self, kind: str, track: Track, rung: str) -> str:
        """This request's CMCD: the player's state as dash.js reports it."""
        buffer = self.buffer
        return cmcd_query(
            sid=self.rec.session or f"vp-{self.rec.index}-{int(self.pressed * 1000)}",
            kind=kind,
            bitrate_bps=dict(track.rungs).get(rung, 0),
            buffer_s=buffer.level,
            throughput_bps=self.estimate.bps,
            startup=buffer.playhead is None or self.failed_at is not None,
            starved=buffer.stall_since is not None or len(buffer.stalls) > self.stalls_seen,
        )

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
