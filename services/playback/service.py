"""Playback service: StartPlayback, HeartbeatPlayback, StopPlayback.

StartPlayback verifies the caller's access token locally, checks the content
(catalog for ``titles/…``, channels for ``channels/…`` and live events) and the
entitlement it needs, ranks edges from the registry (:mod:`.steering`), and
signs one token per session with :class:`livemesh.tokens.TokenSigner`, whose
path prefix covers the whole presentation (``/live/{channel}/``): every URL the
player derives from the manifest inherits it. Without any edge registered the
``--origin-url`` is the one answer (a node that verifies ``/t/{token}/`` paths:
an edge; the bare origin serves no tokenised paths). The session is recorded in Redis
(:mod:`.sessions`).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import time

import grpc

from livemesh import tokens
from livemesh.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from livemesh.channels.v1 import channels_pb2, channels_pb2_grpc
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.playback.v1 import playback_pb2_grpc as pb_grpc
from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc
from services.common import validate
from services.common.auth import Principal, TokenVerifier, authenticate, identity_key_loader
from services.common.cache import ReadThroughCache
from services.common.clients import ChannelFactory
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from services.common.process import Service, connect_redis, service_main
from services.common.server import ServiceSpec
from services.playback.sessions import SessionStore
from services.playback.steering import rank_edges

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 30
SESSION_TTL_S = 3 * HEARTBEAT_INTERVAL_S
DEFAULT_URL_TTL_S = 4 * 3600
CACHE_TTL_S = 1.0
LIVE_ENTITLEMENT = "live"
EDGE_SERVICE = "edge"
DEFAULT_ORIGIN_URL = os.environ.get("LIVEMESH_ORIGIN_URL", "http://127.0.0.1:8081")
MAX_RANKINGS = 4096  # (region, content) rankings kept per edge snapshot
PASS_THROUGH = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


class _Downstream(ServiceError):
    """A dependency's answer about this request's content, passed on with its code."""

    def __init__(self, what: str, error: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{what}: {error.details()}")
        self.code = error.code() if error.code() in PASS_THROUGH else grpc.StatusCode.UNAVAILABLE


class PlaybackServicer(pb_grpc.PlaybackServiceServicer):
    def __init__(
        self, redis_url: str, verifier: TokenVerifier, factory: ChannelFactory, *,
        catalog: str, channels: str, registry: str, origin_url: str = DEFAULT_ORIGIN_URL,
        signer: tokens.TokenSigner | None = None, url_ttl_s: int = DEFAULT_URL_TTL_S,
        cache_ttl_s: float = CACHE_TTL_S,
    ) -> None:
        self.sessions = SessionStore(connect_redis(redis_url, decode=False))
        self.verifier = verifier
        self.factory = factory
        self.targets = {"catalog": catalog, "channels": channels, "registry": registry}
        self.origin_url = origin_url.rstrip("/")
        self.signer = signer or tokens.TokenSigner.from_env()
        self.url_ttl_s = url_ttl_s
        self._last_edges: list[registry_pb2.Instance] = []  # last known registry answer
        # press play is the hot path: what it reads changes slowly, so a second's staleness
        # saves a hop per call (the registry's own expiry takes three heartbeats anyway)
        self._titles: ReadThroughCache[catalog_pb2.Title] = ReadThroughCache(cache_ttl_s)
        self._channels: ReadThroughCache[channels_pb2.Channel] = ReadThroughCache(cache_ttl_s)
        self._edge_cache: ReadThroughCache[list[registry_pb2.Instance]] = ReadThroughCache(
            cache_ttl_s)
        # rankings of the current edge snapshot by (region, content): viewers of one region
        # and channel share one sort until the registry's answer changes
        self._ranked_of: list[registry_pb2.Instance] | None = None
        self._ranked: dict[tuple[str, str], list[registry_pb2.Instance]] = {}

    # -- what is played ---------------------------------------------------------------

    async def _title(self, name: str) -> catalog_pb2.Title:
        async def load() -> catalog_pb2.Title:
            stub = self.factory.stub(catalog_pb2_grpc.CatalogServiceStub, self.targets["catalog"])
            try:
                return (await stub.GetTitle(catalog_pb2.GetTitleRequest(name=name))).title
            except grpc.aio.AioRpcError as error:
                raise _Downstream("content", error) from error

        return await self._titles.get(name, load)

    async def _channel(self, name: str) -> channels_pb2.Channel:
        async def load() -> channels_pb2.Channel:
            stub = self.factory.stub(channels_pb2_grpc.ChannelServiceStub,
                                     self.targets["channels"])
            try:
                return (await stub.GetChannel(channels_pb2.GetChannelRequest(name=name))).channel
            except grpc.aio.AioRpcError as error:
                raise _Downstream("content", error) from error

        return await self._channels.get(name, load)

    async def _authorise(self, content: str, principal: Principal) -> tuple[str, str]:
        """(path prefix, manifest path) the caller may play; raises when it may not."""
        kind = content.split("/", 1)[0]
        if kind == "titles":
            validate.parse_name(content, "content", "titles")
            title = await self._title(content)
            needed = title.required_entitlement
            if needed and needed not in principal.entitlements:
                raise PermissionDenied(f"{content} needs the entitlement {needed}")
            if title.kind == catalog_pb2.TITLE_KIND_LIVE_EVENT:
                return await self._authorise(title.live_channel, principal)
            if title.kind in (catalog_pb2.TITLE_KIND_SERIES, catalog_pb2.TITLE_KIND_SEASON):
                raise InvalidArgument("content", "play an episode, not a series or season")
            title_id = content.split("/", 1)[1]
            return f"/vod/{title_id}/", f"/vod/{title_id}/manifest.mpd"
        (channel_id,) = validate.parse_name(content, "content", "channels")
        if LIVE_ENTITLEMENT not in principal.entitlements:
            raise PermissionDenied(f"live channels need the entitlement {LIVE_ENTITLEMENT}")
        channel = await self._channel(content)
        if channel.state == channels_pb2.CHANNEL_STATE_ENDED:
            raise FailedPrecondition(f"{content} has ended")
        return f"/live/{channel_id}/", f"/live/{channel_id}/manifest.mpd"

    # -- where from ---------------------------------------------------------------------

    async def _edges(self) -> list[registry_pb2.Instance]:
        return await self._edge_cache.get(EDGE_SERVICE, self._resolve_edges)

    async def _resolve_edges(self) -> list[registry_pb2.Instance]:
        stub = self.factory.stub(registry_pb2_grpc.RegistryServiceStub, self.targets["registry"])
        try:
            reply = await stub.ResolveInstances(
                registry_pb2.ResolveInstancesRequest(service=EDGE_SERVICE))
        except grpc.aio.AioRpcError as error:
            log.warning("registry failed (%s): last known edges", error.code().name)
            return self._last_edges
        self._last_edges = list(reply.instances)
        return self._last_edges

    def _ranking(self, edges: list[registry_pb2.Instance], region: str,
                  content_key: str) -> list[registry_pb2.Instance]:
        if edges is not self._ranked_of or len(self._ranked) >= MAX_RANKINGS:
            self._ranked_of, self._ranked = edges, {}
        ranked = self._ranked.get((region, content_key))
        if ranked is None:
            ranked = self._ranked[region, content_key] = rank_edges(edges, region, content_key)
        return ranked

    async def _urls(self, token: str, manifest: str, content_key: str, region: str,
                    max_urls: int) -> list[pb.ManifestUrl]:
        path = tokens.tokenized(token, manifest)
        ranked = self._ranking(await self._edges(), region, content_key)[:max_urls]
        urls = [pb.ManifestUrl(url=f"{e.address.rstrip('/')}{path}", instance=e.name,
                               region=e.region, rank=i + 1) for i, e in enumerate(ranked)]
        if not urls:
            urls.append(pb.ManifestUrl(url=f"{self.origin_url}{path}", rank=1))
        return urls

    # -- sessions -----------------------------------------------------------------------

    async def _session(self, name: str, principal: Principal) -> pb.PlaybackSession:
        (session_id,) = validate.parse_name(name, "name", "playbackSessions")
        session = await self.sessions.load(session_id)
        if session is None:
            raise NotFound(f"{name} not found (ended or expired)")
        principal.require_account(session.account)
        return session

    async def StartPlayback(
        self, request: pb.StartPlaybackRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartPlaybackResponse:
        validate.required(request.content, "content", max_len=200)
        if request.content.split("/", 1)[0] not in ("titles", "channels"):
            raise InvalidArgument("content", "must be titles/{id} or channels/{id}")
        if request.profile:
            validate.parse_name(request.profile, "profile", "accounts", "profiles")
        if request.client_region:
            validate.resource_id(request.client_region, "client_region")
        max_urls = validate.page_size(request.max_urls, 3, 10, "max_urls")
        request_id = validate.request_id(request.request_id)
        principal = await authenticate(context, self.verifier)
        if request.profile and not request.profile.startswith(principal.account + "/"):
            raise PermissionDenied("the profile belongs to another account")
        if request_id:
            earlier = await self.sessions.created_by(request_id)
            if earlier is not None:
                return pb.StartPlaybackResponse(
                    session=await self._session(f"playbackSessions/{earlier}", principal))
        prefix, manifest = await self._authorise(request.content, principal)
        session_id = secrets.token_hex(12)
        token = self.signer.sign(prefix, session_id, self.url_ttl_s)
        content_key = prefix.strip("/").split("/", 1)[1]
        session = pb.PlaybackSession(
            name=f"playbackSessions/{session_id}", account=principal.account,
            profile=request.profile, content=request.content, state=pb.SESSION_STATE_PLAYING,
            heartbeat_interval_seconds=HEARTBEAT_INTERVAL_S,
            manifest_urls=await self._urls(token, manifest, content_key, request.client_region,
                                           max_urls),
        )
        now = time.time()
        session.start_time.FromNanoseconds(int(now * 1e9))
        session.token_expire_time.FromSeconds(int(now) + self.url_ttl_s)
        await self.sessions.save(session, SESSION_TTL_S, request_id)
        return pb.StartPlaybackResponse(session=session)

    async def HeartbeatPlayback(
        self, request: pb.HeartbeatPlaybackRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatPlaybackResponse:
        validate.parse_name(request.name, "name", "playbackSessions")
        if request.position_ms < 0:
            raise InvalidArgument("position_ms", "must not be negative")
        if request.state not in pb.SessionState.values() or request.state == \
                pb.SESSION_STATE_ENDED:
            raise InvalidArgument("state", "must be PLAYING, PAUSED or BUFFERING")
        principal = await authenticate(context, self.verifier)
        session = await self._session(request.name, principal)
        if session.state == pb.SESSION_STATE_ENDED:
            raise FailedPrecondition(f"{request.name} has ended")
        session.position_ms = request.position_ms
        if request.state != pb.SESSION_STATE_UNSPECIFIED:
            session.state = request.state
        await self.sessions.save(session, SESSION_TTL_S)
        return pb.HeartbeatPlaybackResponse(session=session)

    async def StopPlayback(
        self, request: pb.StopPlaybackRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopPlaybackResponse:
        validate.parse_name(request.name, "name", "playbackSessions")
        validate.request_id(request.request_id)
        principal = await authenticate(context, self.verifier)
        session = await self._session(request.name, principal)
        session.state = pb.SESSION_STATE_ENDED
        await self.sessions.save(session, HEARTBEAT_INTERVAL_S)  # a retried stop still finds it
        return pb.StopPlaybackResponse(session=session)


class PlaybackService(Service):
    def __init__(self, servicer: PlaybackServicer) -> None:
        self.servicer = servicer

    def specs(self) -> list[ServiceSpec]:
        return [ServiceSpec(
            pb.DESCRIPTOR.services_by_name["PlaybackService"].full_name,
            self.servicer, pb_grpc.add_PlaybackServiceServicer_to_server,
        )]

    async def close(self) -> None:
        await self.servicer.sessions.close()


async def build(args: argparse.Namespace, factory: ChannelFactory) -> Service:
    verifier = TokenVerifier(identity_key_loader(factory, args.identity_target))
    return PlaybackService(PlaybackServicer(
        args.redis_url, verifier, factory, catalog=args.catalog_target,
        channels=args.channels_target, registry=args.registry_target,
        origin_url=args.origin_url, url_ttl_s=args.url_ttl,
    ))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--origin-url", default=DEFAULT_ORIGIN_URL,
                        help="base URL players get when no edge is registered; it must "
                             "understand /t/{token}/ paths, i.e. be an edge (LIVEMESH_ORIGIN_URL)")
    parser.add_argument("--url-ttl", type=int, default=DEFAULT_URL_TTL_S,
                        help="lifetime of the signed URL tokens, seconds")


def main(argv: list[str] | None = None) -> int:
    return service_main("playback", argv, build, add_arguments, needs_redis=True)
