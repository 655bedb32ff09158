"""Profiles (Redis + read-through cache, own account only) and co-occurrence recommendations."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import field_mask_pb2
from redis.exceptions import ConnectionError

from kernel.keys import ProfileKeys
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from livemesh.profile.v1 import profile_pb2 as pb
from livemesh.profile.v1 import profile_pb2_grpc as pb_grpc
from livemesh.recommend.v1 import recommend_pb2 as rpb
from livemesh.recommend.v1 import recommend_pb2_grpc as rpb_grpc
from services.profile.service import ProfileService
from services.recommend import model
from services.recommend.service import RecommendationService
from tests.services.conftest import SignUp, Start, Viewer, expect_error


async def make_profile(stub: pb_grpc.ProfileServiceStub, viewer: Viewer, pid: str) -> str:
    reply = await stub.CreateProfile(
        pb.CreateProfileRequest(
            parent=viewer.account, profile_id=pid, profile=pb.Profile(display_name=pid)
        ),
        metadata=viewer.auth,
    )
    return reply.profile.name


@dataclass
class AdasProfile:
    """A running profile service, a signed-up viewer and her profile ``main``."""

    stub: pb_grpc.ProfileServiceStub
    ada: Viewer
    name: str


@pytest.fixture
async def adas_profile(
    start: Start,
    factory: RpcChannelFactory,
    sign_up: SignUp,
    verifier: TokenVerifier,
    redis_url: str,
) -> AdasProfile:
    running = await start(ProfileService(redis_url, verifier))
    stub = factory.stub(pb_grpc.ProfileServiceStub, running.target)
    ada = await sign_up("ada@example.org")
    return AdasProfile(stub, ada, await make_profile(stub, ada, "main"))


async def test_profiles_crud_history_and_ownership(
    start: Start,
    factory: RpcChannelFactory,
    sign_up: SignUp,
    verifier: TokenVerifier,
    redis_url: str,
) -> None:
    running = await start(ProfileService(redis_url, verifier))
    stub = factory.stub(pb_grpc.ProfileServiceStub, running.target)
    ada, bob = await sign_up("ada@example.org"), await sign_up("bob@example.org")

    created = await stub.CreateProfile(
        pb.CreateProfileRequest(
            parent=ada.account,
            profile_id="kids",
            request_id="r1",
            profile=pb.Profile(
                display_name="Kids",
                preferences=pb.Preferences(language="pt-BR", maturity_rating="PG"),
            ),
        ),
        metadata=ada.auth,
    )
    retried = await stub.CreateProfile(
        pb.CreateProfileRequest(
            parent=ada.account,
            profile_id="kids",
            request_id="r1",
            profile=pb.Profile(display_name="Kids"),
        ),
        metadata=ada.auth,
    )
    assert retried.profile == created.profile
    name = created.profile.name
    assert name == f"{ada.account}/profiles/kids"

    got = (await stub.GetProfile(pb.GetProfileRequest(name=name), metadata=ada.auth)).profile
    assert got.preferences.language == "pt-BR"  # and now it is cached
    updated = await stub.UpdateProfile(
        pb.UpdateProfileRequest(
            profile=pb.Profile(name=name, preferences=pb.Preferences(autoplay=True)),
            update_mask=field_mask_pb2.FieldMask(paths=["preferences.autoplay"]),
        ),
        metadata=ada.auth,
    )
    assert updated.profile.preferences.autoplay and updated.profile.preferences.language == "pt-BR"
    got = (await stub.GetProfile(pb.GetProfileRequest(name=name), metadata=ada.auth)).profile
    assert got.preferences.autoplay  # the write invalidated the cached copy

    for title in ("titles/orbital-decay", "titles/signal-lost", "titles/orbital-decay"):
        await stub.RecordView(
            pb.RecordViewRequest(parent=name, view=pb.View(title=title, position_seconds=60)),
            metadata=ada.auth,
        )
    views = (await stub.ListViews(pb.ListViewsRequest(parent=name), metadata=ada.auth)).views
    assert [v.title for v in views] == ["titles/orbital-decay", "titles/signal-lost"]

    # someone else's profile: PERMISSION_DENIED; no token: UNAUTHENTICATED
    await expect_error(
        stub.GetProfile(pb.GetProfileRequest(name=name), metadata=bob.auth),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        stub.ListViews(pb.ListViewsRequest(parent=name), metadata=bob.auth),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        stub.GetProfile(pb.GetProfileRequest(name=name)), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect_error(
        stub.GetProfile(
            pb.GetProfileRequest(name=name), metadata=(("authorization", "Bearer x.y.z"),)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )

    lst = await stub.ListProfiles(pb.ListProfilesRequest(parent=ada.account), metadata=ada.auth)
    assert [p.name for p in lst.profiles] == [name]
    await stub.DeleteProfile(pb.DeleteProfileRequest(name=name), metadata=ada.auth)
    await expect_error(
        stub.GetProfile(pb.GetProfileRequest(name=name), metadata=ada.auth),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_history_keeps_viewing_order_when_views_share_a_millisecond(
    adas_profile: AdasProfile, redis: aioredis.Redis
) -> None:
    stub, ada, name = adas_profile.stub, adas_profile.ada, adas_profile.name
    first = await stub.RecordView(
        pb.RecordViewRequest(parent=name, view=pb.View(title="titles/signal-lost")),
        metadata=ada.auth,
    )
    # the newest view stored a second ahead of this clock: the next view's own
    # millisecond would trail it, as a tie would (ties sort by title: o < s)
    key = ProfileKeys(ada.account.split("/")[1]).views("main")
    ahead = first.view.view_time.ToMilliseconds() + 1000
    await redis.zadd(key, {"titles/signal-lost": ahead})
    second = await stub.RecordView(
        pb.RecordViewRequest(parent=name, view=pb.View(title="titles/orbital-decay")),
        metadata=ada.auth,
    )
    views = (await stub.ListViews(pb.ListViewsRequest(parent=name), metadata=ada.auth)).views
    assert [v.title for v in views] == ["titles/orbital-decay", "titles/signal-lost"]
    assert second.view.view_time.ToMilliseconds() == ahead  # whole ms: the newest one's


async def test_profile_bad_input(adas_profile: AdasProfile) -> None:
    stub, ada, name = adas_profile.stub, adas_profile.ada, adas_profile.name
    cases = [
        (
            stub.CreateProfile(pb.CreateProfileRequest(parent="users/x"), metadata=ada.auth),
            "parent",
        ),
        (
            stub.CreateProfile(pb.CreateProfileRequest(parent=ada.account), metadata=ada.auth),
            "profile.display_name",
        ),
        (
            stub.CreateProfile(
                pb.CreateProfileRequest(
                    parent=ada.account,
                    profile=pb.Profile(
                        display_name="x", preferences=pb.Preferences(language="english!")
                    ),
                ),
                metadata=ada.auth,
            ),
            "profile.preferences.language",
        ),
        (
            stub.UpdateProfile(
                pb.UpdateProfileRequest(profile=pb.Profile(name=name)), metadata=ada.auth
            ),
            "update_mask",
        ),
        (
            stub.UpdateProfile(
                pb.UpdateProfileRequest(
                    profile=pb.Profile(name=name),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                ),
                metadata=ada.auth,
            ),
            "update_mask",
        ),
        (
            stub.RecordView(
                pb.RecordViewRequest(parent=name, view=pb.View(title="x")), metadata=ada.auth
            ),
            "view.title",
        ),
        (
            stub.RecordView(
                pb.RecordViewRequest(
                    parent=name, view=pb.View(title="titles/demo", position_seconds=-1)
                ),
                metadata=ada.auth,
            ),
            "view.position_seconds",
        ),
        (
            stub.ListViews(pb.ListViewsRequest(parent=name, page_size=-1), metadata=ada.auth),
            "page_size",
        ),
    ]
    for call, field in cases:
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, field)


async def test_recommendations_from_co_occurrence_with_popularity_fallback(
    start: Start,
    factory: RpcChannelFactory,
    sign_up: SignUp,
    verifier: TokenVerifier,
    redis_url: str,
) -> None:
    profiles = await start(ProfileService(redis_url, verifier))
    recs = await start(RecommendationService(redis_url, verifier, factory, profiles.target))
    pstub = factory.stub(pb_grpc.ProfileServiceStub, profiles.target)
    rstub = factory.stub(rpb_grpc.RecommendationServiceStub, recs.target)

    histories = {
        "u1@example.org": ["orbital-decay", "signal-lost"],
        "u2@example.org": ["orbital-decay", "signal-lost", "cold-front"],
        "u3@example.org": ["quiet-orchard", "paper-tigers"],
        "u4@example.org": ["quiet-orchard", "paper-tigers", "harbor-lights"],
        "u5@example.org": ["quiet-orchard", "paper-tigers"],
    }
    for email, titles in histories.items():
        viewer = await sign_up(email)
        name = await make_profile(pstub, viewer, "main")
        for title in titles:
            await pstub.RecordView(
                pb.RecordViewRequest(parent=name, view=pb.View(title=f"titles/{title}")),
                metadata=viewer.auth,
            )

    fan = await sign_up("fan@example.org")
    fan_profile = await make_profile(pstub, fan, "main")
    cold = await rstub.ListRecommendations(
        rpb.ListRecommendationsRequest(parent=fan_profile, page_size=3), metadata=fan.auth
    )
    assert cold.fallback and all(r.reason == rpb.REASON_POPULAR for r in cold.recommendations)
    assert {r.title for r in cold.recommendations[:2]} == {
        "titles/quiet-orchard",
        "titles/paper-tigers",
    }  # watched three times each

    await pstub.RecordView(
        pb.RecordViewRequest(parent=fan_profile, view=pb.View(title="titles/orbital-decay")),
        metadata=fan.auth,
    )
    warm = await rstub.ListRecommendations(
        rpb.ListRecommendationsRequest(parent=fan_profile, page_size=5), metadata=fan.auth
    )
    assert not warm.fallback
    top = warm.recommendations[0]
    assert (top.title, top.reason, top.because_of) == (
        "titles/signal-lost",
        rpb.REASON_WATCHED_TOGETHER,
        "titles/orbital-decay",
    )
    assert warm.recommendations[1].title == "titles/cold-front"
    assert "titles/orbital-decay" not in {r.title for r in warm.recommendations}

    other = await sign_up("other@example.org")
    await expect_error(
        rstub.ListRecommendations(
            rpb.ListRecommendationsRequest(parent=fan_profile), metadata=other.auth
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        rstub.ListRecommendations(
            rpb.ListRecommendationsRequest(parent=fan.account), metadata=fan.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parent",
    )

    # the profile service is down: popularity answers instead of an error
    orphan = await start(RecommendationService(redis_url, verifier, factory, "127.0.0.1:1"))
    down = await factory.stub(
        rpb_grpc.RecommendationServiceStub, orphan.target
    ).ListRecommendations(rpb.ListRecommendationsRequest(parent=fan_profile), metadata=fan.auth)
    assert down.fallback and down.recommendations


async def test_a_view_is_recorded_when_the_model_cannot_count_it(
    adas_profile: AdasProfile, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The model is fed after the profile's MULTI: its failure loses a count, not the view."""
    stub, ada, name = adas_profile.stub, adas_profile.ada, adas_profile.name

    async def unreachable(*_: object) -> None:
        raise ConnectionError("the model's node is down")

    monkeypatch.setattr(model, "record_first_view", unreachable)
    await stub.RecordView(
        pb.RecordViewRequest(parent=name, view=pb.View(title="titles/signal-lost")),
        metadata=ada.auth,
    )
    views = (await stub.ListViews(pb.ListViewsRequest(parent=name), metadata=ada.auth)).views
    assert [v.title for v in views] == ["titles/signal-lost"]
    assert "recommendation model not updated for titles/signal-lost" in caplog.text
