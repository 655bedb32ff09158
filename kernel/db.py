"""The relational database: records that must outlive Redis (accounts, keys, channels).

Redis holds what may be lost or rebuilt (sessions, rate limits, the live window); a
record whose loss would sign viewers out or orphan a broadcaster lives here, with real
transactions and constraints. PostgreSQL (asyncpg) in production, SQLite (aiosqlite)
as the embedded default, both through SQLAlchemy's async engine.

Migrations are a small ordered table of SQL per component, applied at start in one
transaction each, not Alembic: a service must bring its schema up to date every time it
starts, on either engine, concurrently with its other instances, and Alembic's script
directory and ``env.py`` (run through a sync shim) are more machinery than a few
``CREATE TABLE`` statements need. The version row is inserted first, in the same
transaction as the statements: of two instances starting at once, one applies a version
and the other meets its primary key, rolls back and finds it applied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kernel.config import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 5000  # two services on one SQLite file wait for the write lock
# "off": the read-through caches in front of the database keep nothing, so every read of
# a record reaches the database (bench/start_playback.py puts the database on the
# press-play path so, to weigh what the caches save); for measurement, not production
READ_CACHE_ENV = "LIVEMESH_DB_READ_CACHE"

MIGRATIONS_TABLE = sa.table(
    "schema_migrations",
    sa.column("component", sa.String),
    sa.column("version", sa.Integer),
    sa.column("name", sa.String),
)
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL,
    name VARCHAR(200) NOT NULL,
    PRIMARY KEY (component, version)
)"""


@dataclass(frozen=True)
class Migration:
    """One step of a component's schema; never edited once released, only followed."""

    version: int
    name: str
    statements: tuple[str, ...]


def database_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (a refused connect, a closed
    connection, a timeout), as opposed to a query it refused: the caller may retry."""
    if isinstance(exc, ConnectionError | TimeoutError | DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa.exc.OperationalError | sa.exc.InterfaceError
        )
    return False


def record_cache_ttl(ttl_s: float) -> float:
    """The lifetime of a cached database record: ``ttl_s``, or 0 with the caches turned
    off (:data:`READ_CACHE_ENV`)."""
    return 0.0 if os.environ.get(READ_CACHE_ENV) == "off" else ttl_s


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite enforces foreign keys only when asked, per connection; WAL lets readers
    read while another process writes."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def connect_database(url: str) -> AsyncEngine:
    """An engine for ``url``; connections are checked before use, so one the server
    closed (a restart) is replaced rather than failing a request."""
    engine = create_async_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def migrate(
    engine: AsyncEngine, component: str, migrations: Sequence[Migration]
) -> list[int]:
    """Apply ``component``'s migrations not yet applied, in order; the versions applied."""
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(CREATE_MIGRATIONS_TABLE))
    except IntegrityError:  # PostgreSQL's IF NOT EXISTS races: a concurrent start made it
        pass
    applied = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if await _apply(engine, component, migration):
            applied.append(migration.version)
    return applied


async def _apply(engine: AsyncEngine, component: str, migration: Migration) -> bool:
    row = {"component": component, "version": migration.version, "name": migration.name}
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(MIGRATIONS_TABLE).values(row))
            for statement in migration.statements:
                await conn.execute(sa.text(statement))
    except IntegrityError:  # applied already, by an earlier start or a concurrent one
        return False
    return True


async def check_database(url: str, setting: str = "LIVEMESH_DATABASE_URL") -> None:
    """Refuse to start on a database that cannot be used. Raises :class:`ConfigError`
    naming ``setting`` (the URL is not shown: it may carry a password)."""
    try:
        engine = connect_database(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"{setting}: not a database URL SQLAlchemy can use: {exc}") from exc
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (OSError, DBAPIError, DisconnectionError) as exc:
        raise ConfigError(f"{setting}: cannot reach the database: {exc}") from exc
    finally:
        await engine.dispose()


class EmbeddedDatabase:
    """A SQLite file in a private directory (0700) that lives as long as this object:
    the default when no ``database_url`` is set, as the embedded Redis is for Redis."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="livemesh-db-"))

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self._dir / 'livemesh.db'}"

    def remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
