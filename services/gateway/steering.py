"""A playback session's own manifests and their content steering, served by the gateway.

The MPD an origin or edge serves is shared and cached, so it cannot name a session's
edges. The gateway serves each session an MPD that lists one ``BaseURL`` per ranked edge
(``serviceLocation`` = the edge, the session's ``/t/{token}/`` inside the URL) and a
``ContentSteering`` element pointing at the session's steering endpoint, which answers the
DASH-IF steering manifest from the registry's health and load now (playback's
``GetSteering``), less the edges the gateway's own probe finds not answering
(:mod:`services.gateway.reachability`). When an edge dies, the player's BaseURL failover
covers the gap until the next steering answer, which no longer names it; the MPD refreshes
come from the gateway, so they survive the loss of any one edge. The session's LL-HLS
multivariant playlist (:mod:`services.gateway.steered_hls`) names the same edges as HLS
Pathways and the same steering endpoint: one answer serves both protocols.

The channel's MPD is fetched from the best edge that answers, at most once per
``MPD_FRESH_S`` per manifest path (every session of a channel shares it), and rewritten
with lxml: the tree is never built here, only given its BaseURLs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from lxml import etree

from kernel import tokens
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.playback.v1 import playback_pb2_grpc as pb_grpc
from services.gateway.reachability import Reachability
from services.gateway.steered_hls import (
    MULTIVARIANT_NAME,
    PLAYLIST_MEDIA_TYPE,
    BadPlaylist,
    steered_multivariant,
)

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
MPD_NAME = "manifest.mpd"
MPD_MEDIA_TYPE = "application/dash+xml"
STEERING_MEDIA_TYPE = "application/json"
# How soon a player asks again. A dead edge needs no answer to be left: every player leaves
# it on its own failed requests (Shaka for 60 s, hls.js for 300 s, dash.js for one TTL) and
# the next answer no longer names it. dash.js forgets a failed location after one TTL, so the
# TTL must outlast the answer that drops it: at 2 s, a dash.js whose previous answer still
# named the dead edge went back to it and stalled again.
STEERING_TTL_S = 5
MPD_FRESH_S = 0.5  # a fetched channel MPD serves every session for this long
FETCH_TIMEOUT_S = 1.5  # per edge: a dead edge must not hold the MPD refresh
# elements an MPD lists before its BaseURLs (ISO/IEC 23009-1, MPDtype)
BEFORE_BASE_URL = {f"{{{MPD_NS}}}ProgramInformation"}
# ... and before ContentSteering: everything up to the first Period
BEFORE_PERIOD = {
    f"{{{MPD_NS}}}{name}"
    for name in (
        "ProgramInformation",
        "BaseURL",
        "Location",
        "PatchLocation",
        "ServiceDescription",
        "InitializationSet",
        "InitializationGroup",
        "InitializationPresentation",
        "ContentProtection",
    )
}
# an upstream answer is untrusted bytes: no entities, no network, no huge trees
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class NoManifest(Exception):
    """No edge of the session answered with its MPD."""


def service_location(url: pb.ManifestUrl) -> str:
    """The name a BaseURL and the steering manifest know an edge by."""
    return url.instance.rsplit("/", 1)[-1] or "origin"


def base_url(url: pb.ManifestUrl) -> str:
    """The directory of a signed manifest URL: relative segment URLs resolve under it."""
    return url.url.rsplit("/", 1)[0] + "/"


def steered_mpd(mpd: bytes, urls: Sequence[pb.ManifestUrl], steering_uri: str) -> bytes:
    """``mpd`` with one BaseURL per ``urls`` (best first) and a ContentSteering element
    naming ``steering_uri``, the first URL's edge as its default."""
    root = etree.fromstring(mpd, PARSER)
    for old in root.findall(f"{{{MPD_NS}}}BaseURL") + root.findall(f"{{{MPD_NS}}}ContentSteering"):
        root.remove(old)
    children = list(root)
    at = next((i for i, c in enumerate(children) if c.tag not in BEFORE_BASE_URL), len(children))
    for offset, url in enumerate(urls):
        element = etree.Element(f"{{{MPD_NS}}}BaseURL", serviceLocation=service_location(url))
        element.text = base_url(url)
        root.insert(at + offset, element)
    children = list(root)
    at = next((i for i, c in enumerate(children) if c.tag not in BEFORE_PERIOD), len(children))
    steering = etree.Element(
        f"{{{MPD_NS}}}ContentSteering",
        defaultServiceLocation=service_location(urls[0]) if urls else "",
        queryBeforeStart="false",
    )
    steering.text = steering_uri
    root.insert(at, steering)
    result: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return result


def steering_manifest(urls: Sequence[pb.ManifestUrl], reload_uri: str) -> dict[str, Any]:
    """The DASH-IF content steering manifest: the edges serving now, best first.

    The order is given under both names the key has had: ``PATHWAY-PRIORITY`` (DASH-IF
    CTS 001 1.0, the only one dash.js 5 and Shaka 5 read: with the other alone they kept
    the default location and never failed over by steering) and
    ``SERVICE-LOCATION-PRIORITY`` (the community-review draft, read by video.js)."""
    order = [service_location(url) for url in urls]
    return {
        "VERSION": 1,
        "TTL": STEERING_TTL_S,
        "RELOAD-URI": reload_uri,
        "PATHWAY-PRIORITY": order,
        "SERVICE-LOCATION-PRIORITY": order,
    }


class ManifestSource:
    """The channel manifests sessions are served from, fetched from their edges and shared
    for ``MPD_FRESH_S`` by path (the token stripped: every session's is the same)."""

    def __init__(self, fresh_s: float = MPD_FRESH_S) -> None:
        self.fresh_s = fresh_s
        self._client: aiohttp.ClientSession | None = None
        self._fetched: dict[str, tuple[float, bytes]] = {}

    async def fetch(self, urls: Sequence[pb.ManifestUrl], name: str = MPD_NAME) -> bytes:
        """The document ``name`` beside the manifest of the first of ``urls`` that answers
        (the MPD, or the LL-HLS multivariant playlist); raises :class:`NoManifest`."""
        if not urls:
            raise NoManifest("the session has no edge")
        key = tokens.split_token(urlsplit(base_url(urls[0]) + name).path)[1]
        now = time.monotonic()
        cached = self._fetched.get(key)
        if cached is not None and now - cached[0] < self.fresh_s:
            return cached[1]
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
            )
        for url in urls:
            try:
                async with self._client.get(base_url(url) + name) as response:
                    if response.status == 200:
                        body = await response.read()
                        self._fetched[key] = (now, body)
                        return body
            except (aiohttp.ClientError, TimeoutError):
                continue  # the next edge
        raise NoManifest(f"no edge answered for {key}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class SessionUrls(NamedTuple):
    """A session's routes on the gateway."""

    mpd: str
    steering: str
    playlist: str  # the LL-HLS multivariant playlist


def session_urls(base: str, session_id: str) -> SessionUrls:
    """The URLs of session ``session_id`` on the gateway at ``base``."""
    root = f"{base}/v1/sessions/{session_id}"
    return SessionUrls(f"{root}/{MPD_NAME}", f"{root}/steering", f"{root}/{MULTIVARIANT_NAME}")


class SessionManifests:
    """The per-session routes: the steered MPD, the steered multivariant playlist and the
    steering manifest both name."""

    def __init__(self, playback: Callable[[], pb_grpc.PlaybackServiceStub]) -> None:
        self.playback = playback
        self.source = ManifestSource()
        self.reachability = Reachability()

    async def _urls(
        self, request: web.Request
    ) -> tuple[str, pb.GetSteeringResponse, list[pb.ManifestUrl]]:
        """The session's steering reply and its ranked edges, less those that do not
        answer now."""
        session_id = request.match_info["session"]
        reply = await self.playback().GetSteering(
            pb.GetSteeringRequest(name=f"playbackSessions/{session_id}")
        )
        return session_id, reply, await self.reachability.serving(reply.manifest_urls)

    async def manifest(self, request: web.Request) -> web.Response:
        # issue 16: the live-delay cell (imported here: live_delay uses this module's parser)
        from services.gateway.live_delay import with_target_latency

        session_id, reply, urls = await self._urls(request)
        try:
            mpd = await self.source.fetch(urls)
        except NoManifest as exc:
            raise web.HTTPServiceUnavailable(reason=str(exc)) from exc
        steering = session_urls(gateway_base(request), session_id).steering
        return web.Response(
            body=with_target_latency(steered_mpd(mpd, urls, steering), reply.target_latency_ms),
            content_type=MPD_MEDIA_TYPE,
            headers={"Cache-Control": "no-store"},  # (per session: no shared cache keeps it)
        )

    async def playlist(self, request: web.Request) -> web.Response:
        session_id, _, urls = await self._urls(request)
        steering = session_urls(gateway_base(request), session_id).steering
        pathways = [(service_location(url), base_url(url)) for url in urls]
        try:
            text = await self.source.fetch(urls, MULTIVARIANT_NAME)
            body = steered_multivariant(text.decode(), pathways, steering)
        except (NoManifest, BadPlaylist, UnicodeDecodeError) as exc:
            raise web.HTTPServiceUnavailable(reason=str(exc)) from exc
        return web.Response(
            text=body, content_type=PLAYLIST_MEDIA_TYPE, headers={"Cache-Control": "no-store"}
        )

    async def steering(self, request: web.Request) -> web.Response:
        session_id, _, urls = await self._urls(request)
        reload_uri = session_urls(gateway_base(request), session_id).steering
        return web.json_response(
            steering_manifest(urls, reload_uri), headers={"Cache-Control": "no-store"}
        )

    async def close(self) -> None:
        await self.source.close()
        await self.reachability.close()


def gateway_base(request: web.Request) -> str:
    """The gateway's address as the caller reached it."""
    return f"{request.scheme}://{request.host}"
