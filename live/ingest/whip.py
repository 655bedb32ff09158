"""WHIP (RFC 9725): WebRTC ingest over HTTP, media through aiortc.

Routes (aiohttp), with ``Authorization: Bearer <stream key>`` on every request:

* ``POST /whip`` or ``POST /whip/{channel}`` — an SDP offer (``application/sdp``);
  ``201 Created`` with the complete SDP answer (aiortc gathers every candidate
  before answering), ``Location`` of the session and its ``ETag``.  With
  ``?backup=1`` the session is the channel's backup feed (dual ingest,
  :mod:`live.ingest.feed_params`): a picture that disagrees with the primary's is
  known only once media flows, after the ``201``, so such a session is then closed
  (the client sees its peer connection end) and the reason is the channel's
  ``refused`` ingest status.
* ``PATCH /whip/sessions/{id}`` — ``application/trickle-ice-sdpfrag``: candidates
  are applied, ``204``; an ICE restart is not supported by aiortc: ``422``.
* ``DELETE /whip/sessions/{id}`` — ends the session, ``200``.
* ``OPTIONS`` on both — CORS preflight, ``Accept-Post: application/sdp``.

Errors carry the reason as ``text/plain``: 401 (no or wrong key), 400 (not an
SDP offer we can read), 406 (no codec aiortc can take: H.264 constrained
baseline ``42e01f``/``42001f`` with packetization-mode 1, or VP8; Opus), 409
(the channel already has a broadcaster), 410 (the channel has just ended), 415
(not ``application/sdp``), 429 (this client tries too often) and 503 (the process
has too many attempts at once): :mod:`live.ingest.admission` refuses a flood of
offers before any key lookup or negotiation, so it never reaches the channels.

FFmpeg's own ``whip`` muxer (FFmpeg 8, as bundled with PyAV) works as a client
when it is given a P-256 certificate (its ``cert_file``/``key_file`` options).
Without them, an FFmpeg built with GnuTLS makes itself a P-224 certificate, and
the OpenSSL inside the ``cryptography`` wheel aiortc uses knows no P-224 TLS
group: the DTLS handshake ends with an ``illegal_parameter`` alert right after
FFmpeg's certificate, in either DTLS role.  Nothing in our SDP answer can change
the client's certificate, so such a failure is logged with that hint.

This module is the HTTP resource.  Offers are checked by :mod:`live.ingest.whip_offer`
before aiortc reads them; a session's life is :mod:`live.ingest.whip_sessions`, and each
receiver decodes behind :mod:`live.ingest.decode_queue`, bounded so a slow decoder
catches up with live instead of falling behind it.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiortc.sdp import SessionDescription, candidate_from_sdp

from kernel import clock
from live.ingest.admission import Admission, Verdict
from live.ingest.channels import SourceLookup
from live.ingest.keys import StreamKeys
from live.ingest.whip_answers import CORS_HEADERS, SDP_MAX_BYTES, offer_refusal, refusal
from live.ingest.whip_offer import SdpError, check_offer
from live.ingest.whip_sessions import SESSIONS, WhipSession, WhipSessions

MAX_NEGOTIATIONS = 4  # offers being answered at once


class WhipEndpoint:
    """The WHIP resources of every channel this ingest process serves."""

    def __init__(
        self,
        sources: SourceLookup,
        keys: StreamKeys,
        admission: Admission | None = None,
    ) -> None:
        self.sources = sources
        self.keys = keys
        self.admission = admission if admission is not None else Admission()
        self.live = WhipSessions()
        self._negotiating = asyncio.Semaphore(MAX_NEGOTIATIONS)

    @property
    def sessions(self) -> dict[str, WhipSession]:
        """The open sessions by id."""
        return self.live.by_id

    async def close_all(self) -> None:
        """Close every session (the process is stopping)."""
        await self.live.close_all()

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
            raise refusal(
                web.HTTPTooManyRequests,
                "too many session attempts from this client",
                retry_s=self.admission.retry_after_s(client),
            )
        if verdict is Verdict.OVERLOADED:
            SESSIONS.labels("overloaded").inc()
            raise refusal(web.HTTPServiceUnavailable, "too many sessions starting", retry_s=1)
        try:
            return await self._post(request)
        finally:
            self.admission.done()

    async def _post(self, request: web.Request) -> web.Response:
        channel = await self._authorise(request)
        wanted = request.match_info.get("channel")
        if wanted is not None and wanted != channel:
            raise refusal(web.HTTPUnauthorized, "the stream key is not this channel's")
        source = await self.sources.source_for(channel)
        if source is None:
            raise refusal(web.HTTPNotFound, f"channel {channel} takes no ingest here")
        if request.content_type != "application/sdp":
            raise refusal(web.HTTPUnsupportedMediaType, "the offer must be application/sdp")
        if request.content_length and request.content_length > SDP_MAX_BYTES:
            raise refusal(web.HTTPRequestEntityTooLarge, "the offer is too large", max_size=0)
        offer = (await request.content.read(SDP_MAX_BYTES + 1)).decode("utf-8", "replace")
        if len(offer) > SDP_MAX_BYTES:
            raise refusal(web.HTTPRequestEntityTooLarge, "the offer is too large", max_size=0)
        try:
            check_offer(offer)
        except SdpError as exc:
            SESSIONS.labels("bad_sdp").inc()
            raise refusal(offer_refusal(exc.status), exc.reason) from exc
        if self._negotiating.locked():
            SESSIONS.labels("overloaded").inc()
            raise refusal(web.HTTPServiceUnavailable, "too many sessions starting", retry_s=1)
        async with self._negotiating:
            backup = request.query.get("backup") == "1"  # dual ingest's second feed
            session = await self.live.open(channel, source, offer, backup)
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
            raise refusal(web.HTTPUnsupportedMediaType, "expected application/trickle-ice-sdpfrag")
        if_match = request.headers.get("If-Match")
        if if_match not in (None, "*", session.etag):
            raise refusal(web.HTTPPreconditionFailed, "the ETag does not match the session")
        fragment = (await request.content.read(SDP_MAX_BYTES)).decode("utf-8", "replace")
        remote = session.pc.remoteDescription
        current = SessionDescription.parse(remote.sdp) if remote else None
        lines = fragment.splitlines()
        ufrags = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("a=ice-ufrag:")]
        ufrag = ufrags[0] if ufrags else None
        ice = current.media[0].ice if current and current.media else None
        if ice is not None and ufrag and ufrag != ice.usernameFragment:
            raise refusal(web.HTTPUnprocessableEntity, "ICE restart is not supported: start anew")
        mid: str | None = None
        for line in fragment.splitlines():
            if line.startswith("a=mid:"):
                mid = line.split(":", 1)[1].strip()
            elif line.startswith("a=candidate:"):
                try:
                    candidate = candidate_from_sdp(line[len("a=") :].split(":", 1)[1])
                except (ValueError, IndexError) as exc:
                    raise refusal(web.HTTPBadRequest, f"bad candidate line: {line}") from exc
                candidate.sdpMid = mid
                await session.pc.addIceCandidate(candidate)
        return web.Response(status=204, headers=CORS_HEADERS)

    async def delete(self, request: web.Request) -> web.Response:
        session = await self._session_of(request)
        await self.live.close(session, "deleted")
        return web.Response(status=200, headers=CORS_HEADERS)

    async def _authorise(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        channel = await self.keys.channel_for(token.strip()) if scheme == "Bearer" else None
        if channel is None:
            SESSIONS.labels("unauthorised").inc()
            raise refusal(web.HTTPUnauthorized, "a valid stream key is required (Bearer)")
        return channel

    async def _session_of(self, request: web.Request) -> WhipSession:
        channel = await self._authorise(request)
        session = self.live.by_id.get(request.match_info["session"])
        if session is None or session.channel != channel:
            raise refusal(web.HTTPNotFound, "no such session")
        return session
