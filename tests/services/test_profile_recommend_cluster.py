"""Profiles and recommendations on a real Redis Cluster (tests/redis_cluster.py): every
MULTI of the profile service stays in its account's slot, and the recommendation model's
updates, which span slots, go outside it; a CROSSSLOT error would fail these calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis.asyncio as aioredis
from redis.exceptions import CrossSlotTransactionError

from kernel.keys import POPULAR_TITLES, ProfileKeys, co_watched
from kernel.redis_server import redis_client
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from livemesh.profile.v1 import profile_pb2 as pb
from livemesh.profile.v1 import profile_pb2_grpc as pb_grpc
from livemesh.recommend.v1 import recommend_pb2 as rpb
from livemesh.recommend.v1 import recommend_pb2_grpc as rpb_grpc
from services.profile.service import ProfileService
from services.recommend.service import RecommendationService
from tests.redis_cluster import LocalCluster, local_cluster
from tests.services.conftest import SignUp, Start, expect_error
from tests.services.test_profile_recommend_service import make_profile


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """One cluster for the module: six processes and a cluster create cost seconds."""
    yield from local_cluster()


@pytest.fixture
async def cluster_redis(cluster: LocalCluster) -> AsyncIterator[aioredis.Redis]:
    """A client of the cluster, every master emptied first."""
    client = redis_client(cluster.url)
    await client.flushdb(target_nodes="primaries")  # type: ignore[call-arg]
    yield client
    await client.aclose()


async def test_the_cluster_refuses_a_transaction_across_slots(
    cluster_redis: aioredis.Redis,
) -> None:
    """What the profile service's view once did (its MULTI fed the model): refused."""
    views = ProfileKeys("acct").views("main")
    with pytest.raises(CrossSlotTransactionError):
        async with cluster_redis.pipeline(transaction=True) as pipe:
            pipe.zadd(views, {"titles/a": 1.0})
            pipe.zincrby(POPULAR_TITLES, 1, "titles/a")
            await pipe.execute()


async def test_profiles_history_and_recommendations_on_a_cluster(
    start: Start,
    factory: RpcChannelFactory,
    sign_up: SignUp,
    verifier: TokenVerifier,
    cluster: LocalCluster,
    cluster_redis: aioredis.Redis,
) -> None:
    profiles = await start(ProfileService(cluster.url, verifier))
    recs = await start(RecommendationService(cluster.url, verifier, factory, profiles.target))
    pstub = factory.stub(pb_grpc.ProfileServiceStub, profiles.target)
    rstub = factory.stub(rpb_grpc.RecommendationServiceStub, recs.target)

    async def watch(name: str, auth: tuple[tuple[str, str], ...], *titles: str) -> None:
        for title in titles:
            await pstub.RecordView(
                pb.RecordViewRequest(
                    parent=name, view=pb.View(title=f"titles/{title}", position_seconds=30)
                ),
                metadata=auth,
            )

    ada, bob = await sign_up("ada@example.org"), await sign_up("bob@example.org")
    create = pb.CreateProfileRequest(
        parent=ada.account, profile_id="main", request_id="r1", profile=pb.Profile(display_name="A")
    )  # its idempotency key is in the account's slot too
    created = await pstub.CreateProfile(create, metadata=ada.auth)
    retried = await pstub.CreateProfile(create, metadata=ada.auth)
    assert retried.profile == created.profile
    ada_main = created.profile.name
    await watch(ada_main, ada.auth, "orbital-decay", "signal-lost", "cold-front")
    # a retried view (same request id) and a second view of a title count once
    for _ in range(2):
        await pstub.RecordView(
            pb.RecordViewRequest(
                parent=ada_main, request_id="v1", view=pb.View(title="titles/orbital-decay")
            ),
            metadata=ada.auth,
        )
    views = (await pstub.ListViews(pb.ListViewsRequest(parent=ada_main), metadata=ada.auth)).views
    assert [v.title for v in views] == [
        "titles/orbital-decay",
        "titles/cold-front",
        "titles/signal-lost",
    ]
    assert await cluster_redis.zscore(POPULAR_TITLES, "titles/orbital-decay") == 1.0
    assert (
        await cluster_redis.zscore(co_watched("titles/orbital-decay"), "titles/signal-lost") == 1.0
    )

    bob_main = await make_profile(pstub, bob, "main")
    await watch(bob_main, bob.auth, "orbital-decay", "signal-lost")
    fan = await sign_up("fan@example.org")
    fan_main = await make_profile(pstub, fan, "main")
    cold = await rstub.ListRecommendations(
        rpb.ListRecommendationsRequest(parent=fan_main, page_size=3), metadata=fan.auth
    )
    assert cold.fallback
    assert {r.title for r in cold.recommendations[:2]} == {
        "titles/orbital-decay",
        "titles/signal-lost",
    }  # watched twice each

    await watch(fan_main, fan.auth, "orbital-decay")
    warm = await rstub.ListRecommendations(
        rpb.ListRecommendationsRequest(parent=fan_main, page_size=5), metadata=fan.auth
    )
    assert not warm.fallback
    assert [(r.title, r.because_of) for r in warm.recommendations[:2]] == [
        ("titles/signal-lost", "titles/orbital-decay"),
        ("titles/cold-front", "titles/orbital-decay"),
    ]

    # the account's keys sit in one slot, so its MULTI of a delete goes through
    await pstub.DeleteProfile(pb.DeleteProfileRequest(name=ada_main), metadata=ada.auth)
    await expect_error(
        pstub.GetProfile(pb.GetProfileRequest(name=ada_main), metadata=ada.auth),
        grpc.StatusCode.NOT_FOUND,
    )
    assert not await cluster_redis.exists(ProfileKeys(ada.account.split("/")[1]).views("main"))
