"""Shared fixtures: a real Redis server for the whole run, a clean database per test; the
origin's test channel, the origin on loopback and an HTTP client (the origin's LL-DASH and
LL-HLS tests, with or without a cache node in front)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.config.trust import NODE_CREDENTIAL_ENV
from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.rpc import credentials
from live.origin import build_app
from tests.origin_helpers import Channel, CountingOrigin


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` when given, else a private redis-server started for this run."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The services' relational database: a SQLite file of this test's own (the
    PostgreSQL runs are in tests/services/test_database.py)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'livemesh.db'}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session", autouse=True)
def credential_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ed25519PrivateKey]:
    """The credential key of the run, configured as a deployment configures it: servers
    started in-process and stacks started as processes verify operator and node
    credentials with it."""
    path = Path(tmp_path_factory.mktemp("credentials")) / "credential-key.pem"
    key = credentials.write_new_key(path)
    saved = os.environ.get(credentials.KEY_FILE_ENV)
    os.environ[credentials.KEY_FILE_ENV] = str(path)
    yield key
    if saved is None:
        os.environ.pop(credentials.KEY_FILE_ENV, None)
    else:
        os.environ[credentials.KEY_FILE_ENV] = saved


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting ``token``."""
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="session")
def operator_auth(credential_key: Ed25519PrivateKey) -> tuple[tuple[str, str], ...]:
    """Metadata of an operator's call."""
    return bearer(credentials.mint(credential_key, "operator", "tests"))


@pytest.fixture(scope="session")
def node_auth(
    credential_key: Ed25519PrivateKey,
) -> Callable[[str], tuple[tuple[str, str], ...]]:
    """``node_auth(name)``: metadata of a call by node ``name``."""

    def made(name: str) -> tuple[tuple[str, str], ...]:
        return bearer(credentials.mint(credential_key, "node", name))

    return made


@pytest.fixture
def node_env(
    node_auth: Callable[[str], tuple[tuple[str, str], ...]], monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], None]:
    """``node_env(name)``: the nodes the test starts next hold node ``name``'s credential,
    given in their environment as the demo supervisor gives it."""

    def give(name: str) -> None:
        ((_, value),) = node_auth(name)
        monkeypatch.setenv(NODE_CREDENTIAL_ENV, value.removeprefix("Bearer "))

    return give


@pytest.fixture
async def channel(redis: aioredis.Redis) -> Channel:
    ch = Channel(redis)
    await ch.start()
    return ch


@pytest.fixture
async def server(redis: aioredis.Redis) -> AsyncIterator[TestServer]:
    test_server = TestServer(build_app(redis), host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


@pytest.fixture
async def origin(redis: aioredis.Redis) -> AsyncIterator[CountingOrigin]:
    """The origin on loopback with counters of what reaches it (for cache nodes in front)."""
    counting = CountingOrigin(redis)
    await counting.start()
    yield counting
    await counting.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
