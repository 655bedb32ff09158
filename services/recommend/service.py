"""Recommendation service: item-to-item co-occurrence, popularity as the declared fallback.

For a profile it reads the viewing history from the profile service (forwarding
the caller's token, through the channel factory), scores co-watched titles from
the model in Redis, and pads with popular titles. When the profile service is
unreachable or the history is empty, popularity alone answers (``fallback``);
when nothing has been watched anywhere yet, the catalog's editorial order does.
"""

from __future__ import annotations

import logging

import grpc

from kernel.config import RecommendSettings
from kernel.rpc import access, validate
from kernel.rpc.auth import TokenVerifier, bearer_metadata, bearer_token, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import ServiceError
from kernel.rpc.process import Service, connect_redis, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.catalog.v1 import catalog_pb2
from livemesh.profile.v1 import profile_pb2, profile_pb2_grpc
from livemesh.recommend.v1 import recommend_pb2 as pb
from livemesh.recommend.v1 import recommend_pb2_grpc as pb_grpc
from services.catalog.seed import demo_titles
from services.recommend import model

log = logging.getLogger(__name__)
EDITORIAL = [
    t.name
    for t in demo_titles()
    if t.kind
    in (
        catalog_pb2.TITLE_KIND_MOVIE,
        catalog_pb2.TITLE_KIND_SERIES,
        catalog_pb2.TITLE_KIND_LIVE_EVENT,
    )
]
PASS_THROUGH = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
}


class _Passed(ServiceError):
    """A downstream answer about the caller's own request, passed on as it came."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details() or "")
        self.code = error.code()


class RecommendationServicer(pb_grpc.RecommendationServiceServicer):
    def __init__(
        self,
        redis_url: str,
        verifier: TokenVerifier,
        factory: RpcChannelFactory,
        profile_target: str,
    ) -> None:
        self.redis = connect_redis(redis_url)
        self.verifier = verifier
        self.factory = factory
        self.profile_target = profile_target

    async def _history(self, parent: str, token: str) -> list[str] | None:
        """The profile's watched titles, newest first; None when the profile service fails."""
        stub = self.factory.stub(profile_pb2_grpc.ProfileServiceStub, self.profile_target)
        try:
            reply = await stub.ListViews(
                profile_pb2.ListViewsRequest(parent=parent, page_size=100),
                metadata=bearer_metadata(token),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in PASS_THROUGH:
                raise _Passed(error) from error
            log.warning("profile service failed (%s): popularity fallback", error.code().name)
            return None
        return [v.title for v in reply.views]

    @access.viewer
    async def ListRecommendations(
        self, request: pb.ListRecommendationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRecommendationsResponse:
        account_id, _ = validate.parse_name(request.parent, "parent", "accounts", "profiles")
        size = validate.page_size(request.page_size, 10, 50)
        token = bearer_token(context)
        principal = await self.verifier.verify(token)
        principal.require_account(f"accounts/{account_id}")
        history = await self._history(request.parent, token)
        seen = set(history or [])
        picks = await model.co_watched(self.redis, history or [], size)
        out = [
            pb.Recommendation(
                title=p.title,
                score=p.score,
                reason=pb.REASON_WATCHED_TOGETHER,
                because_of=p.because_of,
            )
            for p in picks
        ]
        chosen = seen | {p.title for p in picks}
        if len(out) < size:
            for p in await model.popular(self.redis, size - len(out), chosen):
                out.append(
                    pb.Recommendation(title=p.title, score=p.score, reason=pb.REASON_POPULAR)
                )
                chosen.add(p.title)
        for name in EDITORIAL:
            if len(out) >= size:
                break
            if name not in chosen:
                out.append(pb.Recommendation(title=name, score=0.0, reason=pb.REASON_POPULAR))
                chosen.add(name)
        return pb.ListRecommendationsResponse(recommendations=out, fallback=not picks)


class RecommendationService(Service):
    def __init__(
        self,
        redis_url: str,
        verifier: TokenVerifier,
        factory: RpcChannelFactory,
        profile_target: str,
    ) -> None:
        self.servicer = RecommendationServicer(redis_url, verifier, factory, profile_target)

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
                self.servicer,
                pb_grpc.add_RecommendationServiceServicer_to_server,
                viewers=self.servicer.verifier,
            )
        ]

    async def close(self) -> None:
        await self.servicer.redis.aclose()


async def build(settings: RecommendSettings, factory: RpcChannelFactory) -> Service:
    verifier = TokenVerifier(identity_key_loader(factory, settings.identity_target))
    return RecommendationService(
        settings.required_redis_url(), verifier, factory, settings.profile_target
    )


def main(argv: list[str] | None = None) -> int:
    return service_main(RecommendSettings, argv, build, needs_redis=True)
