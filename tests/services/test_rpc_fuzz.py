"""Random messages at every unary RPC of every service: never INTERNAL or UNKNOWN from input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.tokens import TokenSigner, new_keys
from livemesh.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from livemesh.channels.v1 import channels_pb2, channels_pb2_grpc
from livemesh.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from livemesh.identity.v1 import identity_pb2, identity_pb2_grpc
from livemesh.playback.v1 import playback_pb2, playback_pb2_grpc
from livemesh.profile.v1 import profile_pb2, profile_pb2_grpc
from livemesh.recommend.v1 import recommend_pb2, recommend_pb2_grpc
from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc
from livemesh.search.v1 import search_pb2, search_pb2_grpc
from services.catalog.service import CatalogService
from services.channels.service import ChannelService
from services.experiments.service import ExperimentService
from services.playback.service import PlaybackService, PlaybackServicer
from services.profile.service import ProfileService
from services.recommend.service import RecommendationService
from services.registry.service import RegistryService
from services.search.service import SearchService
from tests.services.conftest import Metadata, SignUp, Start

MODULES = [
    (identity_pb2, identity_pb2_grpc),
    (catalog_pb2, catalog_pb2_grpc),
    (search_pb2, search_pb2_grpc),
    (profile_pb2, profile_pb2_grpc),
    (recommend_pb2, recommend_pb2_grpc),
    (playback_pb2, playback_pb2_grpc),
    (channels_pb2, channels_pb2_grpc),
    (registry_pb2, registry_pb2_grpc),
    (experiments_pb2, experiments_pb2_grpc),
]
METHODS: list[tuple[Any, MethodDescriptor]] = [
    (grpc_mod, method)
    for pb_mod, grpc_mod in MODULES
    for service in pb_mod.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if not method.server_streaming
]
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "titles/demo",
            "channels/demo",
            "accounts/x/profiles/y",
            "instances/e1",
            "demo",
            "a@b.co",
            "titles/",
            "../..",
            "%00",
            "x" * 300,
        ]
    ),
)


def scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return TEXT
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if fd.type == FieldDescriptor.TYPE_INT64:
        return st.integers(-(2**63), 2**63 - 1)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 8)  # includes numbers the enum does not define
    return st.integers(-(2**31), 2**31 - 1)


def fill(message: Message, draw: Any, depth: int = 0) -> None:
    descriptor: Descriptor = message.DESCRIPTOR
    for fd in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(message, fd.name).update(
                draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
            )
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 2 or fd.message_type.full_name.startswith("google.protobuf."):
                continue
            repeats = draw(st.integers(1, 2)) if _repeated(fd) else 1
            for _ in range(repeats):
                child = (
                    getattr(message, fd.name).add() if _repeated(fd) else getattr(message, fd.name)
                )
                fill(child, draw, depth + 1)
                if not _repeated(fd):
                    child.SetInParent()
        elif _repeated(fd):
            getattr(message, fd.name).extend(draw(st.lists(scalar(fd), max_size=3)))
        else:
            setattr(message, fd.name, draw(scalar(fd)))


def _repeated(fd: FieldDescriptor) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return flag if isinstance(flag, bool) else fd.label == FieldDescriptor.LABEL_REPEATED


@st.composite
def calls(draw: Any) -> tuple[Any, MethodDescriptor, Message]:
    grpc_mod, method = draw(st.sampled_from(METHODS))
    message = GetMessageClass(method.input_type)()
    fill(message, draw)
    return grpc_mod, method, message


@dataclass
class Plane:
    targets: dict[str, str]
    auth: tuple[tuple[str, str], ...]


@pytest.fixture
async def plane(
    start: Start,
    factory: RpcChannelFactory,
    verifier: TokenVerifier,
    sign_up: SignUp,
    redis_url: str,
    database_url: str,
) -> Plane:
    from tests.services.conftest import Viewer

    viewer: Viewer = await sign_up("fuzz@example.org")
    catalog = await start(CatalogService())
    channels = await start(ChannelService(redis_url, database_url))
    registry = await start(RegistryService())
    profile = await start(ProfileService(redis_url, verifier))
    targets = {
        "catalog": catalog.target,
        "channels": channels.target,
        "registry": registry.target,
        "search": (await start(SearchService(factory, catalog.target))).target,
        "profile": profile.target,
        "experiments": (
            await start(ExperimentService(redis_url, database_url, viewers=verifier))
        ).target,
        "recommend": (
            await start(RecommendationService(redis_url, verifier, factory, profile.target))
        ).target,
        "playback": (
            await start(
                PlaybackService(
                    PlaybackServicer(
                        redis_url,
                        verifier,
                        factory,
                        catalog=catalog.target,
                        channels=channels.target,
                        registry=registry.target,
                        signer=TokenSigner.from_spec(new_keys()),
                    )
                )
            )
        ).target,
    }
    return Plane(targets, viewer.auth)


SERVICE_KEY = {
    "IdentityService": "identity",
    "CatalogService": "catalog",
    "SearchService": "search",
    "ProfileService": "profile",
    "RecommendationService": "recommend",
    "PlaybackService": "playback",
    "ChannelService": "channels",
    "RegistryService": "registry",
    "ExperimentService": "experiments",
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# no credential, a viewer's, an operator's: the operator's reach the handlers of the
# methods the access stage keeps from viewers
@given(call=calls(), caller=st.sampled_from(["nobody", "viewer", "operator"]))
async def test_random_messages_never_cause_internal_errors(
    plane: Plane,
    factory: RpcChannelFactory,
    identity: Any,
    operator_auth: Metadata,
    call: Any,
    caller: str,
) -> None:
    grpc_mod, method, message = call
    service = method.containing_service.name
    target = (
        identity.target if service == "IdentityService" else plane.targets[SERVICE_KEY[service]]
    )
    stub = getattr(grpc_mod, f"{service}Stub")(factory.channel(target))
    try:
        await getattr(stub, method.name)(
            message,
            metadata={"nobody": (), "viewer": plane.auth, "operator": operator_auth}[caller],
            timeout=10,
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            method.full_name,
            message,
            error.details(),
        )
        assert error.details(), method.full_name
