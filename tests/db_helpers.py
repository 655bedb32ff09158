"""The relational database in tests: a fresh PostgreSQL database per test (on the server
``LIVEMESH_TEST_DATABASE_URL`` names, the ``test`` database on loopback by default), a
SQLite file, and a TCP proxy a test can cut to take the database away."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from loadrig.delay_proxy import DelayProxy

POSTGRES_URL = os.environ.get(
    "LIVEMESH_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@contextlib.asynccontextmanager
async def fresh_postgres(base_url: str = POSTGRES_URL) -> AsyncIterator[str]:
    """The URL of an empty database made for the caller on ``base_url``'s server, dropped
    after: tests share the server, never each other's tables."""
    name = f"lm_test_{secrets.token_hex(6)}"
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


class TcpProxy(DelayProxy):
    """Forwards loopback connections to ``host:port`` until :meth:`cut`, which closes
    every connection and refuses new ones, as a database that went away does."""

    async def cut(self) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def proxied_postgres() -> AsyncIterator[tuple[str, TcpProxy]]:
    """A fresh database, and its URL through a proxy the caller may cut."""
    async with fresh_postgres() as url:
        parsed = make_url(url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        await proxy.start()
        yield (
            parsed.set(port=proxy.listen_port).render_as_string(hide_password=False),
            proxy,
        )
        if proxy.running:
            await proxy.cut()
