"""WHIP sessions: one peer connection each, feeding its channel until it ends.

A session is opened from a checked offer on a channel free of broadcasters; its tracks'
frames go to the channel's feed, stamped with their arrival, and it is closed when the
client deletes it, the connection fails, its media never starts or stops (the slate
comes back), the channel's feed is taken over, or the channel ends (the operator's
EndChannel: the peer connection is closed, so the broadcaster's stack sees the session end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from prometheus_client import Counter

from kernel import clock
from live.ingest.decode_queue import BoundedDecodeQueue, bound_decoder
from live.ingest.ingest_source import ChannelBusy, ChannelEnded, IngestFeed, IngestSource
from live.ingest.whip_answers import refusal
from live.ingest.whip_offer import SUPPORTED

log = logging.getLogger("livemesh.ingest.whip")

CONNECT_TIMEOUT_S = 15.0  # from answer to media flowing, at most

SESSIONS = Counter("livemesh_whip_sessions", "WHIP sessions by outcome", ["outcome"])


@dataclass
class WhipSession:
    """One publisher's peer connection, the feed it fills and the tasks that end with it."""

    id: str
    channel: str
    pc: RTCPeerConnection
    feed: IngestFeed
    etag: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    queues: list[BoundedDecodeQueue] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class WhipSessions:
    """The open sessions of this process, by id."""

    def __init__(self) -> None:
        self.by_id: dict[str, WhipSession] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def open(
        self, channel: str, source: IngestSource, offer: str, backup: bool = False
    ) -> WhipSession:
        """A session answering ``offer`` on ``channel``, or the refusal the client gets
        (409 busy channel, 410 ended channel, 406 no codec aiortc can take, 400 an
        unusable offer)."""
        session_id = secrets.token_urlsafe(16)
        self.loop = asyncio.get_running_loop()
        try:
            feed = source.attach(
                shared_clock=False, on_cut=lambda why: self._cut(session_id, why), backup=backup
            )
        except ChannelBusy as exc:
            SESSIONS.labels("busy").inc()
            raise refusal(web.HTTPConflict, f"channel {channel} already has a broadcaster") from exc
        except ChannelEnded as exc:
            SESSIONS.labels("ended").inc()
            raise refusal(web.HTTPGone, f"channel {channel} has ended") from exc
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: answer at once
        session = WhipSession(session_id, channel, pc, feed, f'"{secrets.token_hex(8)}"')

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            session.tasks.append(asyncio.create_task(self._consume(session, track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and pc.iceConnectionState == "completed":
                log.warning(
                    "whip %s: session %s: ICE completed but DTLS failed; an FFmpeg whip "
                    "client needs a P-256 certificate (cert_file, key_file)",
                    channel,
                    session_id,
                )
                SESSIONS.labels("dtls_failed").inc()
            if pc.connectionState in ("failed", "closed"):
                await self.close(session, pc.connectionState)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            for transceiver in pc.getTransceivers():
                bounded = bound_decoder(transceiver.receiver)
                if bounded is not None:
                    session.queues.append(bounded)
            await pc.setLocalDescription(await pc.createAnswer())
        except OperationError as exc:
            await self._abandon(session)
            SESSIONS.labels("no_codec").inc()
            raise refusal(web.HTTPNotAcceptable, f"{exc}: supported are {SUPPORTED}") from exc
        except (ValueError, InvalidStateError) as exc:
            await self._abandon(session)
            SESSIONS.labels("bad_sdp").inc()
            raise refusal(web.HTTPBadRequest, f"unusable offer: {exc}") from exc
        self.by_id[session_id] = session
        session.tasks.append(asyncio.create_task(self._watchdog(session)))
        SESSIONS.labels("opened").inc()
        log.info("whip %s: session %s opened", channel, session_id)
        return session

    async def _abandon(self, session: WhipSession) -> None:
        session.feed.close()
        await session.pc.close()

    async def _consume(self, session: WhipSession, track: MediaStreamTrack) -> None:
        """Hand every decoded frame to the channel's feed, stamped with its arrival."""
        feed = session.feed
        try:
            while True:
                frame: Any = await track.recv()
                pts_s = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                if track.kind == "video":
                    feed.video(frame, pts_s, clock.now_ms())
                else:
                    feed.audio(frame, pts_s, clock.now_ms())
        except MediaStreamError:
            pass
        finally:
            if not session.closed.is_set():
                asyncio.get_running_loop().create_task(self.close(session, "track ended"))

    async def _watchdog(self, session: WhipSession) -> None:
        """End a session whose media never starts, or stops: the slate comes back."""
        while not session.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), timeout=1.0)
            now = clock.now_ms()
            feed = session.feed
            silent_since = feed.last_arrival_ms or feed.attached_ms
            limit_ms = CONNECT_TIMEOUT_S * 1000 if feed.last_arrival_ms is None else 5000
            if not session.closed.is_set() and now - silent_since > limit_ms:
                await self.close(session, "no media")

    def _cut(self, session_id: str, why: str) -> None:
        """The channel cut this session off (evicted, ended, a backup that disagrees, or
        one that took over): close its peer connection, which the broadcaster sees as a
        DTLS close_notify, the end WebRTC has for it.  Any thread may cut (an RTMP
        feed's decode thread does, taking over from this one)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._close_soon, session_id, why)

    def _close_soon(self, session_id: str, why: str) -> None:
        session = self.by_id.get(session_id)
        if session is not None:
            self._closing.add(task := asyncio.create_task(self.close(session, why)))
            task.add_done_callback(self._closing.discard)

    async def close(self, session: WhipSession, why: str) -> None:
        """End ``session`` once (its feed gives the channel back to the slate)."""
        if session.closed.is_set():
            return
        session.closed.set()
        self.by_id.pop(session.id, None)
        session.feed.close()
        log.info("whip %s: session %s closed (%s)", session.channel, session.id, why)
        SESSIONS.labels("closed").inc()
        await session.pc.close()
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()

    async def close_all(self) -> None:
        """Close every session (the process is stopping)."""
        for session in list(self.by_id.values()):
            await self.close(session, "shutdown")
