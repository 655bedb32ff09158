"""Playback: token and entitlement checks, content checks, edge ranking, signed URLs, sessions."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from kernel import tokens
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.playback.v1 import playback_pb2_grpc as pb_grpc
from livemesh.registry.v1 import registry_pb2 as rpb
from livemesh.registry.v1 import registry_pb2_grpc as rpb_grpc
from services.catalog.service import CatalogService
from services.channels.service import ChannelService
from services.playback.service import PlaybackService, PlaybackServicer
from services.playback.steering import (
    SATURATED_LOAD,
    RankingCache,
    rank_edges,
    region_distance,
)
from services.registry.service import RegistryService
from tests.services.conftest import Metadata, Presenting, SignUp, Start, expect_error

SIGNER = tokens.TokenSigner.from_spec("test:" + "ab" * 32)


def edge(
    iid: str,
    region: str,
    load: float = 0.1,
    health: int = rpb.HEALTH_SERVING,
    content: tuple[str, ...] = (),
) -> rpb.Instance:
    return rpb.Instance(
        instance_id=iid,
        name=f"instances/{iid}",
        service="edge",
        address=f"http://{iid}.example:8080",
        region=region,
        load=load,
        health=health,
        content=content,
    )  # type: ignore[arg-type]


def test_ranking_prefers_region_then_health_then_headroom_then_content_then_load() -> None:
    assert region_distance("eu-west", "eu-west") == 0
    assert region_distance("eu-west", "eu-north") == 1
    assert region_distance("eu-west", "us-east") == 2
    edges = [
        edge("far", "us-east", load=0.0),
        edge("near-busy", "eu-west", load=0.9),
        edge("near-hot", "eu-west", load=0.5, content=("demo",)),
        edge("near-idle", "eu-west", load=0.1),
        edge("near-sick", "eu-west", load=0.0, health=rpb.HEALTH_NOT_SERVING),
        edge("area", "eu-north", load=0.0),
    ]
    ranked = [e.instance_id for e in rank_edges(edges, "eu-west", "demo")]
    assert ranked == ["near-hot", "near-idle", "near-busy", "near-sick", "area", "far"]


def test_a_saturated_hot_edge_spills_its_viewers_to_the_next() -> None:
    hot = edge("hot", "eu-west", load=SATURATED_LOAD, content=("demo",))
    cold = edge("cold", "eu-west", load=0.3)
    far = edge("far", "us-east", load=0.0, content=("demo",))
    ranked = [e.instance_id for e in rank_edges([hot, cold, far], "eu-west", "demo")]
    assert ranked == ["cold", "hot", "far"]  # still near before far
    hot.load = SATURATED_LOAD - 0.01  # below the bound its cache wins again
    assert rank_edges([hot, cold], "eu-west", "demo")[0].instance_id == "hot"


def test_a_ranking_is_made_once_per_edge_set_and_remade_when_the_set_changes() -> None:
    cache = RankingCache()

    def names(edges: list[rpb.Instance], region: str = "eu-west") -> list[str]:
        return [e.name.split("/")[1] for e in cache.ranked(edges, region, "demo")]

    def snapshot(**load: float) -> list[rpb.Instance]:  # a registry answer: new messages
        return [edge(iid, "eu-west", load=load.get(iid, 0.1)) for iid in ("a", "b")]

    first = cache.ranked(snapshot(a=0.1, b=0.2), "eu-west", "demo")
    assert [e.base for e in first] == ["http://a.example:8080", "http://b.example:8080"]
    # the registry's next answer, equal: every viewer of the event shares the one ranking
    assert cache.ranked(snapshot(a=0.1, b=0.2), "eu-west", "demo") is first
    assert names(snapshot(a=0.1, b=0.2), "us-east") == ["a", "b"]  # its own ranking
    # a load crossing the saturation bound reorders; an edge added or gone shows at once
    assert names(snapshot(a=SATURATED_LOAD, b=0.2)) == ["b", "a"]
    assert names([*snapshot(a=0.5, b=0.5), edge("c", "eu-west", load=0.0)]) == ["c", "a", "b"]
    assert names([edge("b", "eu-west")]) == ["b"]
    # health or address changed: remade too
    sick = edge("b", "eu-west", health=rpb.HEALTH_NOT_SERVING)
    assert names([sick, edge("a", "eu-west", load=0.7)]) == ["a", "b"]
    moved = edge("a", "eu-west")
    moved.address = "http://a2.example:8080/"
    assert cache.ranked([moved], "eu-west", "demo")[0].base == "http://a2.example:8080"


def test_the_ranking_cache_is_bounded() -> None:
    cache = RankingCache(max_entries=2)
    edges = [edge("a", "eu-west"), edge("b", "us-east")]
    kept = cache.ranked(edges, "eu-west", "demo")
    assert cache.ranked(edges, "eu-west", "demo") is kept
    cache.ranked(edges, "us-east", "demo")
    cache.ranked(edges, "ap-south", "demo")  # a third: the cache starts again
    assert cache.ranked(edges, "eu-west", "demo") is not kept


@dataclass
class Plane:
    playback: pb_grpc.PlaybackServiceStub
    registry: Presenting  # a RegistryServiceStub presenting an operator credential


@pytest.fixture
async def plane(
    start: Start,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    redis_url: str,
    database_url: str,
    operator_auth: Metadata,
) -> Plane:
    catalog = await start(CatalogService())
    channels = await start(ChannelService(redis_url, database_url))
    registry = await start(RegistryService())
    playback = await start(
        PlaybackService(
            PlaybackServicer(
                redis_url,
                verifier,
                factory,
                catalog=catalog.target,
                channels=channels.target,
                registry=registry.target,
                origin_url="http://origin.example:8081",
                signer=SIGNER,
                cache_ttl_s=0,
            )
        )
    )
    return Plane(
        factory.stub(pb_grpc.PlaybackServiceStub, playback.target),
        # the edges of these tests are registered by hand, by an operator
        Presenting(factory.stub(rpb_grpc.RegistryServiceStub, registry.target), operator_auth),
    )


async def test_start_playback_live_ranks_edges_and_signs_urls(
    plane: Plane, sign_up: SignUp
) -> None:
    ada = await sign_up("ada@example.org")
    # no edge registered yet: the origin is the one answer
    alone = (
        await plane.playback.StartPlayback(
            pb.StartPlaybackRequest(content="channels/demo"), metadata=ada.auth
        )
    ).session
    assert [u.url.split("/t/")[0] for u in alone.manifest_urls] == ["http://origin.example:8081"]

    for instance in (
        edge("e-us", "us-east", 0.0),
        edge("e-eu-busy", "eu-west", 0.8),
        edge("e-eu", "eu-west", 0.2, content=("demo",)),
    ):
        instance.ClearField("name")
        await plane.registry.RegisterInstance(rpb.RegisterInstanceRequest(instance=instance))
    started = await plane.playback.StartPlayback(
        pb.StartPlaybackRequest(
            content="titles/demo",
            client_region="eu-west",
            request_id="play-1",
            profile=f"{ada.account}/profiles/main",
        ),
        metadata=ada.auth,
    )
    session = started.session
    assert session.account == ada.account and session.state == pb.SESSION_STATE_PLAYING
    assert [u.instance for u in session.manifest_urls] == [
        "instances/e-eu",
        "instances/e-eu-busy",
        "instances/e-us",
    ]
    url = session.manifest_urls[0].url
    assert url.startswith("http://e-eu.example:8080/t/")
    token, path = tokens.split_token(url.removeprefix("http://e-eu.example:8080"))
    assert token is not None and path == "/live/demo/manifest.mpd"
    claims = SIGNER.verify(token, path)  # what the edge checks before touching its cache
    assert claims.session == session.name.split("/")[1]
    SIGNER.verify(token, "/live/demo/e1/v720/12.m4s")  # relative URLs inherit it
    with pytest.raises(tokens.PathNotCovered):
        SIGNER.verify(token, "/live/other/manifest.mpd")

    retried = await plane.playback.StartPlayback(
        pb.StartPlaybackRequest(
            content="titles/demo", client_region="eu-west", request_id="play-1"
        ),
        metadata=ada.auth,
    )
    assert retried.session.name == session.name

    beat = await plane.playback.HeartbeatPlayback(
        pb.HeartbeatPlaybackRequest(
            name=session.name, position_ms=5000, state=pb.SESSION_STATE_BUFFERING
        ),
        metadata=ada.auth,
    )
    assert (beat.session.position_ms, beat.session.state) == (5000, pb.SESSION_STATE_BUFFERING)
    bob = await sign_up("bob@example.org")
    await expect_error(
        plane.playback.HeartbeatPlayback(
            pb.HeartbeatPlaybackRequest(name=session.name), metadata=bob.auth
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    stopped = await plane.playback.StopPlayback(
        pb.StopPlaybackRequest(name=session.name), metadata=ada.auth
    )
    assert stopped.session.state == pb.SESSION_STATE_ENDED
    await expect_error(
        plane.playback.HeartbeatPlayback(
            pb.HeartbeatPlaybackRequest(name=session.name), metadata=ada.auth
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_start_playback_vod_and_refusals(plane: Plane, sign_up: SignUp) -> None:
    ada = await sign_up("ada@example.org")
    vod = (
        await plane.playback.StartPlayback(
            pb.StartPlaybackRequest(content="titles/orbital-decay"), metadata=ada.auth
        )
    ).session
    token, path = tokens.split_token(
        vod.manifest_urls[0].url.removeprefix("http://origin.example:8081")
    )
    assert path == "/vod/orbital-decay/manifest.mpd"
    SIGNER.verify(token or "", path)

    play = plane.playback.StartPlayback
    await expect_error(
        play(pb.StartPlaybackRequest(content="titles/premiere-night"), metadata=ada.auth),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        play(pb.StartPlaybackRequest(content="titles/nope"), metadata=ada.auth),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        play(pb.StartPlaybackRequest(content="channels/nope"), metadata=ada.auth),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        play(pb.StartPlaybackRequest(content="titles/deep-current"), metadata=ada.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
        "content",
    )
    await expect_error(
        play(pb.StartPlaybackRequest(content="movies/x"), metadata=ada.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
        "content",
    )
    await expect_error(
        play(pb.StartPlaybackRequest(), metadata=ada.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
        "content",
    )
    await expect_error(
        play(pb.StartPlaybackRequest(content="channels/demo", max_urls=11), metadata=ada.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_urls",
    )
    await expect_error(
        play(
            pb.StartPlaybackRequest(content="channels/demo", client_region="EU WEST"),
            metadata=ada.auth,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "client_region",
    )
    await expect_error(
        play(
            pb.StartPlaybackRequest(
                content="channels/demo", profile="accounts/someone-else/profiles/p"
            ),
            metadata=ada.auth,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        play(pb.StartPlaybackRequest(content="channels/demo")), grpc.StatusCode.UNAUTHENTICATED
    )
    forged = ada.token[:-4] + ("AAAA" if not ada.token.endswith("AAAA") else "BBBB")
    await expect_error(
        play(
            pb.StartPlaybackRequest(content="channels/demo"),
            metadata=(("authorization", f"Bearer {forged}"),),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_error(
        plane.playback.HeartbeatPlayback(
            pb.HeartbeatPlaybackRequest(name="playbackSessions/unknown", position_ms=-1),
            metadata=ada.auth,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "position_ms",
    )
    await expect_error(
        plane.playback.StopPlayback(
            pb.StopPlaybackRequest(name="playbackSessions/unknown"), metadata=ada.auth
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_steering_names_the_sessions_edges_that_serve_now(
    plane: Plane, sign_up: SignUp
) -> None:
    ada = await sign_up("ada@example.org")
    for instance in (
        edge("e-up", "eu-west"),
        edge("e-2", "eu-west", load=0.5),
    ):
        instance.ClearField("name")
        await plane.registry.RegisterInstance(rpb.RegisterInstanceRequest(instance=instance))
    session = (
        await plane.playback.StartPlayback(
            pb.StartPlaybackRequest(content="channels/demo", client_region="eu-west"),
            metadata=ada.auth,
        )
    ).session
    assert [u.instance for u in session.manifest_urls] == ["instances/e-up", "instances/e-2"]
    path = session.manifest_urls[0].url.removeprefix("http://e-up.example:8080")

    # no caller credential: the session id is the capability
    steering = await plane.playback.GetSteering(pb.GetSteeringRequest(name=session.name))
    assert [u.url for u in steering.manifest_urls] == [u.url for u in session.manifest_urls]

    await plane.registry.DeregisterInstance(rpb.DeregisterInstanceRequest(name="instances/e-up"))
    steering = await plane.playback.GetSteering(pb.GetSteeringRequest(name=session.name))
    assert [(u.instance, u.url) for u in steering.manifest_urls] == [
        ("instances/e-2", f"http://e-2.example:8080{path}")
    ]  # the same signed path, on the edges serving now

    await expect_error(
        plane.playback.GetSteering(pb.GetSteeringRequest(name="playbackSessions/nope")),
        grpc.StatusCode.NOT_FOUND,
    )
