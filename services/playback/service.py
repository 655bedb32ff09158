"""Playback service: StartPlayback, HeartbeatPlayback, StopPlayback.

StartPlayback verifies the caller's access token locally, checks the content
(catalog for ``titles/…``, channels for ``channels/…`` and live events) and the
entitlement it needs, ranks edges from the registry (:mod:`.steering`), and
signs one token per session with :class:`kernel.tokens.TokenSigner`, whose
path prefix covers the whole presentation (``/live/{channel}/``): every URL the
player derives from the manifest inherits it. Without any edge registered the
``--origin-url`` is the one answer (a node that verifies ``/t/{token}/`` paths:
an edge; the bare origin serves no tokenised paths). The session is recorded in Redis
(:mod:`.sessions`).
"""

from __future__ import annotations

import logging
import secrets
import time
from urllib.parse import urlsplit

import grpc

from kernel import clock, tokens
from kernel.config import DEFAULT_ORIGIN_URL, DEFAULT_URL_TTL_S, PlaybackSettings
from kernel.db import record_cache_ttl
from kernel.rpc import access, validate
from kernel.rpc.auth import (
    Principal,
    TokenVerifier,
    authenticate,
    bearer_token,
    identity_key_loader,
)
from kernel.rpc.cache import ReadThroughCache
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from kernel.rpc.process import Service, connect_redis, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from livemesh.channels.v1 import channels_pb2, channels_pb2_grpc
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.playback.v1 import playback_pb2_grpc as pb_grpc
from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc
from services.playback.edges import edge_list, qoe_windows
from services.playback.live_delay import LiveDelay
from services.playback.qoe_demotion import instance_edge, steering_order
from services.playback.qoe_health import QoeHealthReader
from services.playback.sessions import SessionStore
from services.playback.steering import RankingCache

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 30
SESSION_TTL_S = 3 * HEARTBEAT_INTERVAL_S
CACHE_TTL_S = 1.0
LIVE_ENTITLEMENT = "live"
EDGE_SERVICE = "edge"
PASS_THROUGH = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


class _Downstream(ServiceError):
    """A dependency's answer about this request's content, passed on with its code."""

    def __init__(self, what: str, error: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{what}: {error.details()}")
        self.code = error.code() if error.code() in PASS_THROUGH else grpc.StatusCode.UNAVAILABLE


class PlaybackServicer(pb_grpc.PlaybackServiceServicer):
    def __init__(
        self,
        redis_url: str,
        verifier: TokenVerifier,
        factory: RpcChannelFactory,
        *,
        catalog: str,
        channels: str,
        registry: str,
        signer: tokens.TokenSigner,
        origin_url: str = DEFAULT_ORIGIN_URL,
        url_ttl_s: int = DEFAULT_URL_TTL_S,
        cache_ttl_s: float = CACHE_TTL_S,
        experiments: str = "",
    ) -> None:
        self.sessions = SessionStore(connect_redis(redis_url, decode=False))
        self.live_delay = LiveDelay(factory, experiments)  # (issue 16: the live-delay cell)
        self.verifier = verifier
        self.factory = factory
        self.targets = {"catalog": catalog, "channels": channels, "registry": registry}
        self.origin_url = origin_url.rstrip("/")
        self.signer = signer
        self.url_ttl_s = url_ttl_s
        self._last_edges: list[registry_pb2.Instance] = []  # last known registry answer
        # press play is the hot path: what it reads changes slowly, so a second's staleness
        # saves a hop per call (the registry's own expiry takes three heartbeats anyway)
        # (the records come from the catalog's and channels' databases)
        records_ttl_s = record_cache_ttl(cache_ttl_s)
        self._titles: ReadThroughCache[catalog_pb2.Title] = ReadThroughCache(records_ttl_s)
        self._channels: ReadThroughCache[channels_pb2.Channel] = ReadThroughCache(records_ttl_s)
        self._edge_cache: ReadThroughCache[list[registry_pb2.Instance]] = ReadThroughCache(
            cache_ttl_s
        )
        # rankings of the current edge set by (region, content): viewers of one region and
        # channel share one sort until the edge set changes
        self.rankings = RankingCache()
        self.qoe = QoeHealthReader(self.sessions.redis)  # edges demoted for their QoE

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
            stub = self.factory.stub(channels_pb2_grpc.ChannelServiceStub, self.targets["channels"])
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
                registry_pb2.ResolveInstancesRequest(service=EDGE_SERVICE)
            )
        except grpc.aio.AioRpcError as error:
            log.warning("registry failed (%s): last known edges", error.code().name)
            return self._last_edges
        self._last_edges = list(reply.instances)
        return self._last_edges

    async def _urls(
        self, token: str, manifest: str, content_key: str, region: str, max_urls: int
    ) -> list[pb.ManifestUrl]:
        return await self._signed_urls(
            tokens.tokenized(token, manifest), content_key, region, max_urls
        )

    async def _signed_urls(
        self, path: str, content_key: str, region: str, max_urls: int, steering: bool = False
    ) -> list[pb.ManifestUrl]:
        """``path`` (signed) on the ranked edges, best first (the registry resolves only
        the edges that serve); the edges demoted for QoE last, and those demoted or on
        probation left out of a steering answer (unless none would be left), so that
        players move off them."""
        edges = await self._edges()
        verdict = self.qoe.verdict([e.name for e in edges])
        ranked = self.rankings.ranked(edges, region, content_key, verdict.demoted)
        if steering and verdict.off_steering:
            kept = set(steering_order((e.name for e in ranked), verdict))
            ranked = [e for e in ranked if e.name in kept]
        ranked = ranked[:max_urls]
        urls = [
            pb.ManifestUrl(url=e.base + path, instance=e.name, region=e.region, rank=i + 1)
            for i, e in enumerate(ranked)
        ]
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

    @access.viewer
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
                    session=await self._session(f"playbackSessions/{earlier}", principal)
                )
        prefix, manifest = await self._authorise(request.content, principal)
        session_id = secrets.token_hex(12)
        token = self.signer.sign(prefix, session_id, self.url_ttl_s)
        content_key = prefix.strip("/").split("/", 1)[1]
        session = pb.PlaybackSession(
            name=f"playbackSessions/{session_id}",
            account=principal.account,
            profile=request.profile,
            content=request.content,
            state=pb.SESSION_STATE_PLAYING,
            heartbeat_interval_seconds=HEARTBEAT_INTERVAL_S,
            manifest_urls=await self._urls(
                token, manifest, content_key, request.client_region, max_urls
            ),
        )
        if prefix.startswith("/live/"):  # the live-delay experiment's cell (live_delay.py)
            session.target_latency_ms = await self.live_delay.target_ms(
                bearer_token(context), principal.account, session_id
            )
        now = time.time()
        session.start_time.FromNanoseconds(int(now * 1e9))
        session.token_expire_time.FromSeconds(int(now) + self.url_ttl_s)
        await self.sessions.save(session, SESSION_TTL_S, request_id)
        return pb.StartPlaybackResponse(session=session)

    @access.viewer
    async def HeartbeatPlayback(
        self, request: pb.HeartbeatPlaybackRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatPlaybackResponse:
        validate.parse_name(request.name, "name", "playbackSessions")
        if request.position_ms < 0:
            raise InvalidArgument("position_ms", "must not be negative")
        if request.state not in pb.SessionState.values() or request.state == pb.SESSION_STATE_ENDED:
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

    @access.viewer
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

    @access.public("the session id is the capability: 96 random bits only its player knows")
    async def GetSteering(
        self, request: pb.GetSteeringRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSteeringResponse:
        (session_id,) = validate.parse_name(request.name, "name", "playbackSessions")
        session = await self.sessions.load(session_id)
        if session is None or session.state == pb.SESSION_STATE_ENDED:
            raise NotFound(f"{request.name} not found (ended or expired)")
        given = session.manifest_urls
        path = urlsplit(given[0].url).path if given else ""
        if "/live/" not in path:
            return pb.GetSteeringResponse(manifest_urls=given)  # (on-demand: as handed out)
        content_key = path.split("/live/", 1)[1].split("/", 1)[0]
        region = given[0].region  # (the viewer's is not kept: its best edge's stands in)
        urls = await self._signed_urls(path, content_key, region, max(len(given), 1), True)
        return pb.GetSteeringResponse(
            manifest_urls=urls, target_latency_ms=session.target_latency_ms
        )

    @access.operator
    async def ListEdges(
        self, request: pb.ListEdgesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEdgesResponse:
        stub = self.factory.stub(registry_pb2_grpc.RegistryServiceStub, self.targets["registry"])
        try:
            reply = await stub.ListInstances(
                registry_pb2.ListInstancesRequest(service=EDGE_SERVICE, page_size=1000)
            )
        except grpc.aio.AioRpcError as error:
            raise _Downstream("registry", error) from error
        # the verdict press play acts on, for the edges it ranks (the serving ones)
        verdict = self.qoe.verdict([e.name for e in await self._edges()])
        names = [instance_edge(i.name) for i in reply.instances]
        windows = await qoe_windows(self.sessions.redis, names, clock.now_ms() // 1000)
        return edge_list(reply.instances, windows, verdict)


class PlaybackService(Service):
    def __init__(self, servicer: PlaybackServicer) -> None:
        self.servicer = servicer

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["PlaybackService"].full_name,
                self.servicer,
                pb_grpc.add_PlaybackServiceServicer_to_server,
                viewers=self.servicer.verifier,
            )
        ]

    async def close(self) -> None:
        await self.servicer.sessions.close()


async def build(settings: PlaybackSettings, factory: RpcChannelFactory) -> Service:
    verifier = TokenVerifier(identity_key_loader(factory, settings.identity_target))
    return PlaybackService(
        PlaybackServicer(
            settings.required_redis_url(),
            verifier,
            factory,
            catalog=settings.catalog_target,
            channels=settings.channels_target,
            registry=settings.registry_target,
            signer=tokens.TokenSigner.from_spec(settings.required_token_keys()),
            origin_url=settings.origin_url,
            url_ttl_s=settings.url_ttl,
            experiments=settings.experiments_target,
        )
    )


def main(argv: list[str] | None = None) -> int:
    return service_main(PlaybackSettings, argv, build, needs_redis=True)
