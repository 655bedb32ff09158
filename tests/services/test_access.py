"""Access, generated from the protos: every RPC of every livemesh service declares who may
call it, and every non-public one refuses, on real running servers, a call with no
credential, a forged one, one of the wrong role and (where a resource or a node is named)
one of another account or another node. A new RPC gets these calls without a line here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import livemesh
from kernel.rpc import credentials
from kernel.rpc.access import Access, declared
from kernel.rpc.auth import NODE, OPERATOR, SERVICE, VIEWER, TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.process import Service
from kernel.rpc.server import RunningServer, ServiceSpec
from kernel.tokens import TokenSigner, new_keys
from livemesh.experiments.v1 import experiments_pb2
from livemesh.playback.v1 import playback_pb2, playback_pb2_grpc
from livemesh.profile.v1 import profile_pb2
from livemesh.recommend.v1 import recommend_pb2
from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc
from services.catalog.service import CatalogService
from services.channels.service import ChannelService
from services.experiments.service import ExperimentService
from services.identity.service import IdentityService
from services.playback.service import PlaybackService, PlaybackServicer
from services.profile.service import ProfileService
from services.recommend.service import RecommendationService
from services.registry.service import RegistryService
from services.search.service import SearchService
from tests.conftest import bearer
from tests.services.conftest import Metadata, SignUp, Start, Viewer

REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def livemesh_services() -> Iterator[ServiceDescriptor]:
    """Every service of every generated livemesh module (the protos are the truth)."""
    for module in pkgutil.walk_packages(livemesh.__path__, "livemesh."):
        if module.name.endswith("_pb2"):
            yield from importlib.import_module(module.name).DESCRIPTOR.services_by_name.values()


SERVICES = sorted(livemesh_services(), key=lambda s: s.full_name)
METHODS = [(s, m) for s in SERVICES for m in s.methods]


@dataclass
class Mounted:
    target: str
    spec: ServiceSpec


@dataclass
class Plane:
    mounted: dict[str, Mounted]  # by full service name
    alice: Viewer
    bob: Viewer
    bob_session: str  # a playback session of Bob's


@pytest.fixture
async def plane(
    start: Start,
    identity: RunningServer,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    sign_up: SignUp,
    redis_url: str,
    database_url: str,
) -> Plane:
    identity_service = IdentityService(database_url)
    catalog = CatalogService()
    services: list[Service] = [identity_service, catalog]
    services += [ChannelService(redis_url, database_url), RegistryService()]
    services.append(ExperimentService(redis_url, database_url, viewers=verifier))
    running = {s: await start(s) for s in services}
    search = SearchService(factory, running[catalog].target)
    running[search] = await start(search)
    profile = ProfileService(redis_url, verifier)
    running[profile] = await start(profile)
    recommend = RecommendationService(redis_url, verifier, factory, running[profile].target)
    running[recommend] = await start(recommend)
    targets = {type(s).__name__: r.target for s, r in running.items()}
    playback = PlaybackService(
        PlaybackServicer(
            redis_url,
            verifier,
            factory,
            catalog=targets["CatalogService"],
            channels=targets["ChannelService"],
            registry=targets["RegistryService"],
            signer=TokenSigner.from_spec(new_keys()),
            origin_url="http://origin.example:8081",
            cache_ttl_s=0,
        )
    )
    running[playback] = await start(playback)
    mounted = {
        spec.name: Mounted(target.target, spec)
        for service, target in running.items()
        for spec in service.specs()
    }
    alice, bob = await sign_up("alice@example.org"), await sign_up("bob@example.org")
    channel = grpc.aio.insecure_channel(mounted["livemesh.playback.v1.PlaybackService"].target)
    started = await channel.unary_unary(
        "/livemesh.playback.v1.PlaybackService/StartPlayback",
        request_serializer=playback_pb2.StartPlaybackRequest.SerializeToString,
        response_deserializer=playback_pb2.StartPlaybackResponse.FromString,
    )(playback_pb2.StartPlaybackRequest(content="channels/demo"), metadata=bob.auth)
    await channel.close()
    return Plane(mounted, alice, bob, started.session.name)


def access_of(plane: Plane, service: ServiceDescriptor, method: MethodDescriptor) -> Access:
    found = declared(plane.mounted[service.full_name].spec.servicer, method.name)
    assert found is not None, f"{service.full_name}/{method.name} declares no access"
    return found


async def call(
    plane: Plane, method: MethodDescriptor, request: Message, metadata: Metadata
) -> grpc.StatusCode:
    """The status of one call (OK for an answer; a stream's first message or its end)."""
    target = plane.mounted[method.containing_service.full_name].target
    response = GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            if method.server_streaming:
                stream = channel.unary_stream(
                    path, type(request).SerializeToString, response.FromString
                )
                async for _ in stream(request, metadata=metadata, timeout=5):
                    break
            else:
                unary = channel.unary_unary(
                    path, type(request).SerializeToString, response.FromString
                )
                await unary(request, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def fill(message: Message, text: str) -> Message:
    """``message`` with every string field (nested too) set to ``text``: a request that
    names the node ``text`` wherever it names one."""
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            continue
        if field.type == field.TYPE_STRING:
            setattr(message, field.name, text)
        elif field.type == field.TYPE_MESSAGE and field.message_type.full_name.startswith(
            "livemesh."
        ):
            fill(getattr(message, field.name), text)
    return message


def foreign_viewer_requests(plane: Plane) -> dict[str, Message]:
    """Bob's resources, by method, for Alice to try; every viewer method must be here (a
    viewer method always acts on a resource of its caller's)."""
    bob_profile = f"{plane.bob.account}/profiles/main"
    return {
        "CreateProfile": profile_pb2.CreateProfileRequest(
            parent=plane.bob.account,
            profile_id="p2",
            profile=profile_pb2.Profile(display_name="Mallory"),
        ),
        "GetProfile": profile_pb2.GetProfileRequest(name=bob_profile),
        "ListProfiles": profile_pb2.ListProfilesRequest(parent=plane.bob.account),
        "UpdateProfile": profile_pb2.UpdateProfileRequest(
            profile=profile_pb2.Profile(name=bob_profile, display_name="Mallory"),
            update_mask={"paths": ["display_name"]},
        ),
        "DeleteProfile": profile_pb2.DeleteProfileRequest(name=bob_profile),
        "RecordView": profile_pb2.RecordViewRequest(
            parent=bob_profile, view=profile_pb2.View(title="titles/demo")
        ),
        "ListViews": profile_pb2.ListViewsRequest(parent=bob_profile),
        "ListRecommendations": recommend_pb2.ListRecommendationsRequest(parent=bob_profile),
        "StartPlayback": playback_pb2.StartPlaybackRequest(
            content="channels/demo", profile=bob_profile
        ),
        "HeartbeatPlayback": playback_pb2.HeartbeatPlaybackRequest(name=plane.bob_session),
        "StopPlayback": playback_pb2.StopPlaybackRequest(name=plane.bob_session),
        "AssignCell": experiments_pb2.AssignCellRequest(
            decision="live-delay", account=plane.bob.account
        ),
    }


def wrong_roles(access: Access) -> list[str]:
    """Credential roles the declaration does not admit (viewer aside: a viewer's token is
    identity's, not the credential key's)."""
    return [role for role in (OPERATOR, NODE, SERVICE) if role not in access.roles]


async def test_every_rpc_of_every_livemesh_service_declares_its_access(plane: Plane) -> None:
    assert {s.full_name for s in SERVICES} == set(plane.mounted), "a service is not mounted"
    undeclared = [
        f"{s.full_name}/{m.name}"
        for s, m in METHODS
        if declared(plane.mounted[s.full_name].spec.servicer, m.name) is None
    ]
    assert undeclared == []
    publics = [access_of(plane, s, m) for s, m in METHODS]
    assert all(a.why for a in publics if a.public), "a public method says why"
    # the doors the report found open
    for name, wanted in (
        ("channels.v1.ChannelService/RotateStreamKey", {OPERATOR}),
        ("identity.v1.IdentityService/RotateSigningKey", {OPERATOR}),
        ("registry.v1.RegistryService/RegisterInstance", {NODE, OPERATOR}),
    ):
        service, method = name.split("/")
        mounted = plane.mounted[f"livemesh.{service}"].spec.servicer
        access = declared(mounted, method)
        assert access is not None and access.roles == wanted, name


async def test_no_credential_a_forged_one_the_wrong_role_or_another_owner_is_refused(
    plane: Plane, credential_key: Ed25519PrivateKey
) -> None:
    forger = Ed25519PrivateKey.generate()
    foreign = foreign_viewer_requests(plane)
    accepted: list[str] = []
    tried = 0

    async def expect(
        method: MethodDescriptor, request: Message, metadata: Metadata, codes: tuple[Any, ...]
    ) -> None:
        nonlocal tried
        tried += 1
        got = await call(plane, method, request, metadata)
        if got not in codes:
            accepted.append(f"{method.full_name} {metadata and metadata[0][1][:20]}: {got.name}")

    unauthenticated = (grpc.StatusCode.UNAUTHENTICATED,)
    denied = (grpc.StatusCode.PERMISSION_DENIED,)
    for service, method in METHODS:
        access = access_of(plane, service, method)
        request = fill(GetMessageClass(method.input_type)(), "victim")
        if access.public:
            # the door is open: no refusal for want of a credential (an empty request: a
            # token named in the request, as VerifyToken's, is refused by the method)
            status = await call(plane, method, GetMessageClass(method.input_type)(), ())
            assert status not in REFUSED, (method.full_name, status)
            continue
        await expect(method, request, (), unauthenticated)
        await expect(method, request, (("authorization", "Basic x"),), unauthenticated)
        for role in sorted(access.roles - {VIEWER}):
            forged = credentials.mint(forger, role, "victim")
            await expect(method, request, bearer(forged), unauthenticated)
        for role in wrong_roles(access):
            token = credentials.mint(credential_key, role, "victim")
            await expect(method, request, bearer(token), denied)
        if VIEWER in access.roles:
            assert method.name in foreign, f"{method.full_name}: which resource is foreign?"
            await expect(method, foreign[method.name], plane.alice.auth, denied)
        else:
            # a viewer's valid token: denied where the server knows identity's keys, else
            # unverifiable here
            viewers = plane.mounted[service.full_name].spec.viewers
            await expect(method, request, plane.alice.auth, denied if viewers else unauthenticated)
        if access.speaks_for is not None:
            assert access.speaks_for(request) == "victim"
            intruder = credentials.mint(credential_key, NODE, "intruder")
            await expect(method, request, bearer(intruder), denied)
    assert tried > 3 * len(METHODS) // 2
    assert accepted == []


async def test_press_play_lists_only_edges_that_registered_as_themselves(
    plane: Plane, node_auth: Callable[[str], Metadata]
) -> None:
    registry = plane.mounted["livemesh.registry.v1.RegistryService"]
    register = registry_pb2_grpc.RegistryServiceStub(
        grpc.aio.insecure_channel(registry.target)
    ).RegisterInstance

    def at(instance_id: str, address: str) -> registry_pb2.RegisterInstanceRequest:
        return registry_pb2.RegisterInstanceRequest(
            instance=registry_pb2.Instance(
                instance_id=instance_id, service="edge", address=address, region="eu-west"
            )
        )

    for attempt, metadata in (
        (at("evil", "http://evil.example"), ()),  # the grpcurl of the report
        (at("edge-a", "http://evil.example"), node_auth("edge-b")),  # a node as another
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await register(attempt, metadata=metadata)
        assert refused.value.code() in REFUSED
    await register(at("edge-a", "http://edge-a.example"), metadata=node_auth("edge-a"))

    playback = playback_pb2_grpc.PlaybackServiceStub(
        grpc.aio.insecure_channel(plane.mounted["livemesh.playback.v1.PlaybackService"].target)
    )
    started = await playback.StartPlayback(
        playback_pb2.StartPlaybackRequest(content="channels/demo", client_region="eu-west"),
        metadata=plane.alice.auth,
    )
    hosts = {u.url.split("/t/")[0] for u in started.session.manifest_urls}
    assert hosts == {"http://edge-a.example"}
