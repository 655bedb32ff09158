"""Fixtures for the control-plane tests: real grpc.aio servers on loopback, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from services.common.clients import ChannelFactory
from services.common.errors import FIELD_METADATA_KEY
from services.common.process import Service, serve
from services.common.server import RunningServer

Start = Callable[[Service], Awaitable[RunningServer]]


@pytest.fixture
async def factory() -> AsyncIterator[ChannelFactory]:
    made = ChannelFactory()
    yield made
    await made.close()


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
