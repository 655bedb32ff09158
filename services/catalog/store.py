"""The catalog's records in the relational database (:mod:`kernel.db`).

Titles are rows of ``catalog_titles``: the protobuf message kept whole, plus the columns
that are filtered and ordered on. A title added by ``CreateTitle`` (a VOD upload) is a
record that must outlive Redis and the process, with the name's uniqueness a constraint
of the database, not a check before an insert. Search keeps its own index, fed from here
(:mod:`services.catalog.feed`).

Reads of one title (press play asks for each) go through two caches: this process's
(:class:`kernel.rpc.cache.ReadThroughCache`, which answers the last record while the
database is down) and, when the catalog has a Redis, Redis's (shared by every instance,
so an instance's cold start does not land on the database). A title never changes once
created, so Redis's copy needs no invalidating (a title's absence is cached only here,
and briefly); a Redis that is down or restarted empty only costs the database reads it
would have saved.
"""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from kernel.db import Migration, database_down, migrate, record_cache_ttl
from kernel.rpc.cache import ReadThroughCache
from livemesh.catalog.v1 import catalog_pb2 as pb
from services.catalog import publication_records
from services.catalog.seed import demo_titles

COMPONENT = "catalog"
LOCAL_CACHE_S = 2.0  # a title created at another instance is found within this
REDIS_CACHE_S = 3600
REDIS_KEY = "lm:catalog:title:{}"

# BYTEA: PostgreSQL's bytes; SQLite stores the bytes given as a BLOB whatever the type name
MIGRATIONS = (
    Migration(
        1,
        "catalog titles",
        (
            """CREATE TABLE catalog_titles (
                name VARCHAR(200) PRIMARY KEY,
                kind INTEGER NOT NULL,
                parent VARCHAR(200) NOT NULL,
                sort_key VARCHAR(300) NOT NULL,
                message BYTEA NOT NULL
            )""",
            "CREATE INDEX catalog_titles_parent ON catalog_titles (parent, sort_key)",
        ),
    ),
    publication_records.MIGRATION,
)

titles = sa.table(
    "catalog_titles",
    sa.column("name", sa.String),
    sa.column("kind", sa.Integer),
    sa.column("parent", sa.String),
    sa.column("sort_key", sa.String),
    sa.column("message", sa.LargeBinary),
)


def _row(title: pb.Title) -> dict[str, object]:
    sort_key = f"{title.season_number:04d}{title.episode_number:04d}{title.name}"
    return {
        "name": title.name,
        "kind": title.kind,
        "parent": title.parent,
        "sort_key": sort_key,
        "message": title.SerializeToString(),
    }


class CatalogStore:
    """Titles in the database, read through the caches; ``redis`` is optional."""

    def __init__(self, engine: AsyncEngine, redis: aioredis.Redis | None = None) -> None:
        self.engine = engine
        self.redis = redis
        self._cache: ReadThroughCache[bytes | None] = ReadThroughCache(
            record_cache_ttl(LOCAL_CACHE_S), stale_if=database_down
        )

    async def migrate(self, seed: bool = True) -> None:
        """Bring the schema up to date; with ``seed``, add the demo catalog to an empty one."""
        await migrate(self.engine, COMPONENT, MIGRATIONS)
        if not seed:
            return
        async with self.engine.connect() as conn:
            if await conn.scalar(sa.select(titles.c.name).limit(1)) is not None:
                return
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(titles), [_row(t) for t in demo_titles()])
        except IntegrityError:  # a concurrent start seeded it
            pass

    async def create(self, title: pb.Title) -> bool:
        """Add a title unless its name is taken (the primary key decides); whether it was."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(titles).values(_row(title)))
        except IntegrityError:
            return False
        self._cache.invalidate(title.name)  # a cached absence of it
        return True

    async def get(self, name: str) -> pb.Title | None:
        blob = await self._cache.get(name, lambda: self._load(name))
        return None if blob is None else pb.Title.FromString(blob)

    async def _load(self, name: str) -> bytes | None:
        key = REDIS_KEY.format(name)
        cached = await self._redis_get(key)
        if cached is not None:
            return cached
        async with self.engine.connect() as conn:
            blob: bytes | None = await conn.scalar(
                sa.select(titles.c.message).where(titles.c.name == name)
            )
        if blob is None:
            return None
        await self._redis_set(key, blob)
        return bytes(blob)

    async def _redis_get(self, key: str) -> bytes | None:
        if self.redis is None:
            return None
        try:
            value = await self.redis.get(key)
        except RedisError:  # the cache is down: the database answers
            return None
        return value if isinstance(value, bytes) else None

    async def _redis_set(self, key: str, blob: bytes) -> None:
        if self.redis is None:
            return
        with contextlib.suppress(RedisError):  # the cache is down: the next read asks again
            await self.redis.set(key, blob, ex=REDIS_CACHE_S)

    async def get_many(self, names: list[str]) -> dict[str, pb.Title]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(titles.c.name, titles.c.message).where(titles.c.name.in_(names))
            )
            return {name: pb.Title.FromString(blob) for name, blob in rows}

    async def list_titles(self, parent: str, kind: int, offset: int, limit: int) -> list[pb.Title]:
        query = sa.select(titles.c.message)
        if parent:
            query = query.where(titles.c.parent == parent)
        if kind:
            query = query.where(titles.c.kind == kind)
        query = query.order_by(titles.c.sort_key).limit(limit).offset(offset)
        async with self.engine.connect() as conn:
            return [pb.Title.FromString(blob) for blob in await conn.scalars(query)]
