"""Fixtures for the control-plane tests: real grpc.aio servers on loopback, port 0."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from kernel.rpc.auth import TokenVerifier, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import FIELD_METADATA_KEY
from kernel.rpc.process import Service, serve
from kernel.rpc.server import RunningServer
from tests.db_helpers import fresh_postgres

Start = Callable[[Service], Awaitable[RunningServer]]
Metadata = tuple[tuple[str, str], ...]


class Presenting:
    """A stub whose every call presents ``metadata`` (a credential), as a caller holding
    one does."""

    def __init__(self, stub: Any, metadata: Metadata) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self._stub, name), metadata=self._metadata)


@pytest.fixture
async def factory() -> AsyncIterator[RpcChannelFactory]:
    made = RpcChannelFactory()
    yield made
    await made.close()


@pytest.fixture(params=["postgresql", "sqlite"])
async def any_database(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[str]:
    """An empty database of each engine livemesh runs on."""
    if request.param == "sqlite":
        yield database_url
        return
    async with fresh_postgres() as url:
        yield url


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Starts services on loopback; stops them (and closes them) at the end of the test."""
    started: list[tuple[Service, RunningServer]] = []

    async def starter(service: Service) -> RunningServer:
        running = await serve(service)
        started.append((service, running))
        return running

    yield starter
    for service, running in reversed(started):
        await running.stop(0)
        await service.close()


def field_of(error: grpc.aio.AioRpcError) -> str | None:
    """The field an INVALID_ARGUMENT names in its trailing metadata."""
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return str(value)
    return None


async def expect_error(
    call: Awaitable[object], code: grpc.StatusCode, field: str | None = None
) -> grpc.aio.AioRpcError:
    """Await ``call`` and check it fails with ``code`` (and names ``field``)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == code, (error.code(), error.details())
    if field is not None:
        assert field_of(error) == field, error.details()
        assert field in (error.details() or "")
    return error


@dataclass(frozen=True)
class Viewer:
    account: str  # accounts/{id}
    token: str

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


SignUp = Callable[[str], Awaitable[Viewer]]


@pytest.fixture
async def identity(start: Start, redis: aioredis.Redis, database_url: str) -> RunningServer:
    from services.identity.service import IdentityService

    return await start(IdentityService(database_url))


@pytest.fixture
def verifier(identity: RunningServer, factory: RpcChannelFactory) -> TokenVerifier:
    return TokenVerifier(identity_key_loader(factory, identity.target))


@pytest.fixture
def sign_up(identity: RunningServer, factory: RpcChannelFactory) -> SignUp:
    from livemesh.identity.v1 import identity_pb2, identity_pb2_grpc

    async def make(email: str) -> Viewer:
        stub = factory.stub(identity_pb2_grpc.IdentityServiceStub, identity.target)
        reply = await stub.SignUp(
            identity_pb2.SignUpRequest(
                email=email, password="correct horse battery", display_name=email.split("@")[0]
            )
        )
        return Viewer(reply.account.name, reply.access_token)

    return make
