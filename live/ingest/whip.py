"""WHIP (RFC 9725): WebRTC ingest over HTTP, media through aiortc.

Routes (aiohttp), with ``Authorization: Bearer <stream key>`` on every request:

* ``POST /whip`` or ``POST /whip/{channel}`` — an SDP offer (``application/sdp``);
  ``201 Created`` with the complete SDP answer (aiortc gathers every candidate
  before answering), ``Location`` of the session and its ``ETag``.
* ``PATCH /whip/sessions/{id}`` — ``application/trickle-ice-sdpfrag``: candidates
  are applied, ``204``; an ICE restart is not supported by aiortc: ``422``.
* ``DELETE /whip/sessions/{id}`` — ends the session, ``200``.
* ``OPTIONS`` on both — CORS preflight, ``Accept-Post: application/sdp``.

Errors carry the reason as ``text/plain``: 401 (no or wrong key), 400 (not an
SDP offer we can read), 406 (no codec aiortc can take: H.264 constrained
baseline ``42e01f``/``42001f`` with packetization-mode 1, or VP8; Opus), 409
(the channel already has a broadcaster), 415 (not ``application/sdp``), 429
(this client tries too often) and 503 (the process has too many attempts at
once): :mod:`live.ingest.admission` refuses a flood of offers before any key
lookup or negotiation, so it never reaches the channels.

FFmpeg's own ``whip`` muxer (FFmpeg 8, as bundled with PyAV) works as a client
when it is given a P-256 certificate (its ``cert_file``/``key_file`` options).
Without them, an FFmpeg built with GnuTLS makes itself a P-224 certificate, and
the OpenSSL inside the ``cryptography`` wheel aiortc uses knows no P-224 TLS
group: the DTLS handshake ends with an ``illegal_parameter`` alert right after
FFmpeg's certificate, in either DTLS role.  Nothing in our SDP answer can change
the client's certificate, so such a failure is logged with that hint.

aiortc decodes each receiver on a thread behind an unbounded queue.  Here that
queue is replaced by :class:`BoundedDecodeQueue`: when video decoding falls
:data:`DECODE_QUEUE_FRAMES` behind, the backlog is dropped, frames are skipped
up to the next keyframe and a keyframe is requested with PLI (through the same
path aiortc uses after a decode error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription, candidate_from_sdp
from prometheus_client import Counter

from live.ingest.admission import Admission, Verdict
from live.ingest.ingest_source import ChannelBusy, IngestFeed, IngestSource
from live.ingest.keys import StreamKeys
from livemesh import clock

log = logging.getLogger("livemesh.ingest.whip")

DECODE_QUEUE_FRAMES = 30  # encoded frames waiting for the decoder, at most (video)
AUDIO_DECODE_QUEUE_FRAMES = 50  # 1 s of 20 ms Opus frames
MAX_NEGOTIATIONS = 4  # offers being answered at once
CONNECT_TIMEOUT_S = 15.0  # from answer to media flowing, at most
SDP_MAX_BYTES = 64 * 1024

SUPPORTED = (
    "video: H.264 constrained baseline (profile-level-id 42e01f or 42001f, "
    "packetization-mode=1) or VP8; audio: Opus"
)
SESSIONS = Counter("livemesh_whip_sessions", "WHIP sessions by outcome", ["outcome"])
DECODE_DROPS = Counter(
    "livemesh_whip_decode_drops", "Encoded frames dropped to keep decoding real-time", ["kind"]
)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Accept-Patch, Link",
}


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether an encoded frame (as aiortc reassembles it) starts a decodable picture."""
    if codec == "VP8":
        return bool(data) and not data[0] & 0x01  # P bit clear: key frame
    if codec == "H264":  # Annex B: an IDR slice or a parameter set starts it
        at = data.find(b"\x00\x00\x01")
        while at != -1 and at + 3 < len(data):
            if data[at + 3] & 0x1F in (5, 7):
                return True
            at = data.find(b"\x00\x00\x01", at + 3)
    return False


class BoundedDecodeQueue(queue.Queue[Any]):
    """aiortc's decoder input, bounded: never more than ``limit`` frames behind.

    ``put`` is called on the event loop for every reassembled frame, ``get`` on
    the decoder thread.  Video over the limit: the backlog goes, frames are
    skipped up to the next keyframe, and ``request_keyframe`` is called once.
    Audio over the limit: the oldest frame goes.
    """

    def __init__(self, kind: str, limit: int, request_keyframe: Callable[[], None]) -> None:
        super().__init__()
        self.kind, self.limit = kind, limit
        self.request_keyframe = request_keyframe
        self.waiting_for_keyframe = False
        self.dropped = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # aiortc's stop signal
            super().put(item)
            return
        codec, encoded = item
        if self.kind == "video":
            key = is_keyframe(codec.name, encoded.data)
            if self.waiting_for_keyframe and not key:
                self._drop(1)
                return
            self.waiting_for_keyframe = False
            if self.qsize() >= self.limit:
                with self.mutex:
                    backlog = len(self.queue)
                    self.queue.clear()
                self._drop(backlog)
                if not key:
                    self._drop(1)
                    self.waiting_for_keyframe = True
                    self.request_keyframe()
                    return
        elif self.qsize() >= self.limit:
            with contextlib.suppress(queue.Empty):
                self.get_nowait()
                self._drop(1)
        super().put(item)

    def _drop(self, count: int) -> None:
        self.dropped += count
        DECODE_DROPS.labels(self.kind).inc(count)


def bound_decoder(receiver: RTCRtpReceiver) -> BoundedDecodeQueue | None:
    """Swap the receiver's unbounded decode queue for a bounded one, before it starts.

    aiortc keeps the queue and its decode-error event as private attributes; if a
    release renames them this returns ``None`` and logs, and decoding stays
    unbounded rather than broken.
    """
    queue_attr, error_attr = "_RTCRtpReceiver__decoder_queue", "_RTCRtpReceiver__decoder_error"
    error_event = getattr(receiver, error_attr, None)
    if not hasattr(receiver, queue_attr) or not isinstance(error_event, threading.Event):
        log.warning("aiortc internals changed: the decode queue stays unbounded")
        return None
    if getattr(receiver, "_RTCRtpReceiver__decoder_thread", None) is not None:
        return None  # already decoding
    limit = DECODE_QUEUE_FRAMES if receiver.track.kind == "video" else AUDIO_DECODE_QUEUE_FRAMES
    # a set decode-error event makes aiortc send a PLI with the next packet
    bounded = BoundedDecodeQueue(receiver.track.kind, limit, error_event.set)
    setattr(receiver, queue_attr, bounded)
    return bounded


class SdpError(Exception):
    """The offer is not usable; ``status`` is the HTTP answer (400 or 406)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def check_offer(text: str) -> None:
    """Reject what aiortc would misread or answer wrongly, with the reason."""
    if not text.startswith("v=0"):
        raise SdpError(400, "malformed SDP: an offer starts with v=0")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the line broke
        raise SdpError(400, f"malformed SDP: {type(exc).__name__} {exc}") from exc
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    if not media:
        raise SdpError(400, "the offer has no audio or video")
    for m in media:
        if m.direction not in (None, "sendonly", "sendrecv"):
            raise SdpError(400, f"{m.kind}: WHIP ingest needs sendonly media, got {m.direction}")
        if not (m.ice and m.ice.usernameFragment and m.ice.password):
            raise SdpError(400, f"{m.kind}: ICE credentials (ice-ufrag, ice-pwd) are required")
        if not (m.dtls and m.dtls.fingerprints):
            raise SdpError(400, f"{m.kind}: a DTLS fingerprint is required")
        if not m.rtp.codecs:
            raise SdpError(400, f"{m.kind}: no codecs offered")


@dataclass
class WhipSession:
    id: str
    channel: str
    pc: RTCPeerConnection
    feed: IngestFeed
    etag: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    queues: list[BoundedDecodeQueue] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class WhipEndpoint:
    """The WHIP resources of every channel this ingest process serves."""

    def __init__(
        self,
        sources: dict[str, IngestSource],
        keys: StreamKeys,
        admission: Admission | None = None,
    ) -> None:
        self.sources = sources
        self.keys = keys
        self.admission = admission if admission is not None else Admission()
        self.sessions: dict[str, WhipSession] = {}
        self._negotiating = asyncio.Semaphore(MAX_NEGOTIATIONS)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whip", self.post),
            web.post("/whip/{channel}", self.post),
            web.options("/whip", self.options),
            web.options("/whip/{channel}", self.options),
            web.patch("/whip/sessions/{session}", self.patch),
            web.delete("/whip/sessions/{session}", self.delete),
            web.options("/whip/sessions/{session}", self.options),
        ]

    # -- HTTP ----------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        headers = {**CORS_HEADERS, "Accept-Post": "application/sdp"}
        if "session" in request.match_info:
            headers["Accept-Patch"] = "application/trickle-ice-sdpfrag"
        return web.Response(status=204, headers=headers)

    async def post(self, request: web.Request) -> web.Response:
        """Admission first (429/503), then the key, the offer and the negotiation."""
        client = request.remote or "unknown"
        verdict = self.admission.admit(client, clock.now_ms())
        if verdict is Verdict.CLIENT_LIMITED:
            SESSIONS.labels("rate_limited").inc()
            raise _error(
                web.HTTPTooManyRequests,
                "too many session attempts from this client",
                retry_s=self.admission.retry_after_s(client),
            )
        if verdict is Verdict.OVERLOADED:
            SESSIONS.labels("overloaded").inc()
            raise _error(web.HTTPServiceUnavailable, "too many sessions starting", retry_s=1)
        try:
            return await self._post(request)
        finally:
            self.admission.done()

    async def _post(self, request: web.Request) -> web.Response:
        channel = await self._authorise(request)
        wanted = request.match_info.get("channel")
        if wanted is not None and wanted != channel:
            raise _error(web.HTTPUnauthorized, "the stream key is not this channel's")
        source = self.sources.get(channel)
        if source is None:
            raise _error(web.HTTPNotFound, f"channel {channel} takes no ingest here")
        if request.content_type != "application/sdp":
            raise _error(web.HTTPUnsupportedMediaType, "the offer must be application/sdp")
        if request.content_length and request.content_length > SDP_MAX_BYTES:
            raise _error(web.HTTPRequestEntityTooLarge, "the offer is too large", max_size=0)
        offer = (await request.content.read(SDP_MAX_BYTES + 1)).decode("utf-8", "replace")
        if len(offer) > SDP_MAX_BYTES:
            raise _error(web.HTTPRequestEntityTooLarge, "the offer is too large", max_size=0)
        try:
            check_offer(offer)
        except SdpError as exc:
            SESSIONS.labels("bad_sdp").inc()
            raise _error(_status(exc.status), exc.reason) from exc
        if self._negotiating.locked():
            SESSIONS.labels("overloaded").inc()
            raise _error(web.HTTPServiceUnavailable, "too many sessions starting", retry_s=1)
        async with self._negotiating:
            session = await self._open(channel, source, offer)
        location = f"/whip/sessions/{session.id}"
        return web.Response(
            status=201,
            body=session.pc.localDescription.sdp.encode(),
            content_type="application/sdp",
            headers={
                **CORS_HEADERS,
                "Location": location,
                "ETag": session.etag,
                "Accept-Patch": "application/trickle-ice-sdpfrag",
            },
        )

    async def patch(self, request: web.Request) -> web.Response:
        session = await self._session_of(request)
        if request.content_type != "application/trickle-ice-sdpfrag":
            raise _error(web.HTTPUnsupportedMediaType, "expected application/trickle-ice-sdpfrag")
        if_match = request.headers.get("If-Match")
        if if_match not in (None, "*", session.etag):
            raise _error(web.HTTPPreconditionFailed, "the ETag does not match the session")
        fragment = (await request.content.read(SDP_MAX_BYTES)).decode("utf-8", "replace")
        remote = session.pc.remoteDescription
        current = SessionDescription.parse(remote.sdp) if remote else None
        lines = fragment.splitlines()
        ufrags = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("a=ice-ufrag:")]
        ufrag = ufrags[0] if ufrags else None
        ice = current.media[0].ice if current and current.media else None
        if ice is not None and ufrag and ufrag != ice.usernameFragment:
            raise _error(web.HTTPUnprocessableEntity, "ICE restart is not supported: start anew")
        mid: str | None = None
        for line in fragment.splitlines():
            if line.startswith("a=mid:"):
                mid = line.split(":", 1)[1].strip()
            elif line.startswith("a=candidate:"):
                try:
                    candidate = candidate_from_sdp(line[len("a=") :].split(":", 1)[1])
                except (ValueError, IndexError) as exc:
                    raise _error(web.HTTPBadRequest, f"bad candidate line: {line}") from exc
                candidate.sdpMid = mid
                await session.pc.addIceCandidate(candidate)
        return web.Response(status=204, headers=CORS_HEADERS)

    async def delete(self, request: web.Request) -> web.Response:
        session = await self._session_of(request)
        await self.close(session, "deleted")
        return web.Response(status=200, headers=CORS_HEADERS)

    async def _authorise(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        channel = await self.keys.channel_for(token.strip()) if scheme == "Bearer" else None
        if channel is None:
            SESSIONS.labels("unauthorised").inc()
            raise _error(web.HTTPUnauthorized, "a valid stream key is required (Bearer)")
        return channel

    async def _session_of(self, request: web.Request) -> WhipSession:
        channel = await self._authorise(request)
        session = self.sessions.get(request.match_info["session"])
        if session is None or session.channel != channel:
            raise _error(web.HTTPNotFound, "no such session")
        return session

    # -- sessions ------------------------------------------------------------------------

    async def _open(self, channel: str, source: IngestSource, offer: str) -> WhipSession:
        session_id = secrets.token_urlsafe(16)
        try:
            feed = source.attach(shared_clock=False, on_evicted=lambda: self._evicted(session_id))
        except ChannelBusy as exc:
            SESSIONS.labels("busy").inc()
            raise _error(web.HTTPConflict, f"channel {channel} already has a broadcaster") from exc
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
            raise _error(web.HTTPNotAcceptable, f"{exc}: supported are {SUPPORTED}") from exc
        except (ValueError, InvalidStateError) as exc:
            await self._abandon(session)
            SESSIONS.labels("bad_sdp").inc()
            raise _error(web.HTTPBadRequest, f"unusable offer: {exc}") from exc
        self.sessions[session_id] = session
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

    def _evicted(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            asyncio.get_running_loop().create_task(self.close(session, "evicted"))

    async def close(self, session: WhipSession, why: str) -> None:
        if session.closed.is_set():
            return
        session.closed.set()
        self.sessions.pop(session.id, None)
        session.feed.close()
        log.info("whip %s: session %s closed (%s)", session.channel, session.id, why)
        SESSIONS.labels("closed").inc()
        await session.pc.close()
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await self.close(session, "shutdown")


def _status(code: int) -> type[web.HTTPException]:
    return web.HTTPNotAcceptable if code == 406 else web.HTTPBadRequest


def _error(
    kind: Any, reason: str, retry_s: int | None = None, max_size: int | None = None
) -> web.HTTPException:
    headers = dict(CORS_HEADERS)
    if kind is web.HTTPUnauthorized:
        headers["WWW-Authenticate"] = 'Bearer realm="livemesh ingest"'
    if retry_s is not None:
        headers["Retry-After"] = str(retry_s)
    if max_size is not None:
        return web.HTTPRequestEntityTooLarge(
            max_size=SDP_MAX_BYTES, actual_size=SDP_MAX_BYTES + 1, text=reason, headers=headers
        )
    error: web.HTTPException = kind(text=reason, headers=headers)
    return error
