"""VOD publications as rows of the catalog's database, so they outlive the process.

A publication is the protobuf message kept whole, plus the columns its upkeep selects on:
the stage (running or ended), the source object the store still holds for it
(``held_source``, empty once deleted: a kept source is deleted only when no running
publication reads it), the catalog instance that runs it and when that instance last
wrote it (``update_ms``). An instance rewrites its running publications every few
seconds, which is their lease: a running row nobody has written for longer than the
lease belonged to a catalog that died, and any instance marks it FAILED.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from kernel.db import Migration
from livemesh.catalog.v1 import catalog_pb2 as pb

ENDED = (pb.VOD_PUBLICATION_STAGE_DONE, pb.VOD_PUBLICATION_STAGE_FAILED)

MIGRATION = Migration(
    2,
    "vod publications",
    (
        """CREATE TABLE catalog_vod_publications (
            name VARCHAR(200) PRIMARY KEY,
            stage INTEGER NOT NULL,
            held_source VARCHAR(1024) NOT NULL,
            owner VARCHAR(64) NOT NULL,
            update_ms BIGINT NOT NULL,
            message BYTEA NOT NULL
        )""",
        "CREATE INDEX catalog_vod_publications_stage"
        " ON catalog_vod_publications (stage, update_ms)",
    ),
)

rows = sa.table(
    "catalog_vod_publications",
    sa.column("name", sa.String),
    sa.column("stage", sa.Integer),
    sa.column("held_source", sa.String),
    sa.column("owner", sa.String),
    sa.column("update_ms", sa.BigInteger),
    sa.column("message", sa.LargeBinary),
)


def _values(record: pb.VodPublication, owner: str, now_ms: int) -> dict[str, object]:
    return {
        "stage": record.stage,
        "owner": owner,
        "update_ms": now_ms,
        "message": record.SerializeToString(),
    }


class PublicationRecords:
    """The publications table on ``engine`` (migrated with the catalog's titles)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, record: pb.VodPublication, owner: str, now_ms: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.insert(rows).values(
                    name=record.name,
                    held_source=record.source_object,
                    **_values(record, owner, now_ms),
                )
            )

    async def save(self, records: list[pb.VodPublication], owner: str, now_ms: int) -> None:
        """Write ``records`` as they are now (one transaction)."""
        if not records:
            return
        async with self.engine.begin() as conn:
            for record in records:
                await conn.execute(
                    sa.update(rows)
                    .where(rows.c.name == record.name)
                    .values(**_values(record, owner, now_ms))
                )

    async def get(self, name: str) -> pb.VodPublication | None:
        async with self.engine.connect() as conn:
            blob = await conn.scalar(sa.select(rows.c.message).where(rows.c.name == name))
        return None if blob is None else pb.VodPublication.FromString(blob)

    async def abandoned(self, before_ms: int) -> list[tuple[pb.VodPublication, str, int]]:
        """Running publications nobody has written since ``before_ms``: each with the owner
        and write time it was read at (:meth:`take_over` changes it only if still so)."""
        query = sa.select(rows.c.message, rows.c.owner, rows.c.update_ms).where(
            rows.c.stage.not_in(ENDED), rows.c.update_ms < before_ms
        )
        async with self.engine.connect() as conn:
            found = await conn.execute(query)
            return [(pb.VodPublication.FromString(m), o, u) for m, o, u in found]

    async def take_over(
        self, record: pb.VodPublication, was: tuple[str, int], owner: str, now_ms: int
    ) -> bool:
        """Write ``record`` if its row is still as ``was`` (owner, update_ms) left it: an
        owner that was only late and wrote meanwhile keeps its publication."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(rows)
                .where(
                    rows.c.name == record.name,
                    rows.c.owner == was[0],
                    rows.c.update_ms == was[1],
                )
                .values(**_values(record, owner, now_ms))
            )
        return bool(result.rowcount)

    async def let_go(self, source: str) -> None:
        """Record that the store no longer holds ``source`` (it was deleted)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(rows).where(rows.c.held_source == source).values(held_source="")
            )

    async def in_use(self, source: str) -> bool:
        """Whether a running publication reads ``source``."""
        query = sa.select(rows.c.name).where(
            rows.c.stage.not_in(ENDED), rows.c.held_source == source
        )
        async with self.engine.connect() as conn:
            return await conn.scalar(query.limit(1)) is not None

    async def expired_sources(self, ended_before_ms: int) -> list[str]:
        """Sources still held for publications that ended before ``ended_before_ms`` and
        that no running publication reads."""
        running = sa.select(rows.c.held_source).where(rows.c.stage.not_in(ENDED))
        query = (
            sa.select(rows.c.held_source)
            .where(
                rows.c.stage.in_(ENDED),
                rows.c.held_source != "",
                rows.c.update_ms < ended_before_ms,
                rows.c.held_source.not_in(running),
            )
            .distinct()
        )
        async with self.engine.connect() as conn:
            return list(await conn.scalars(query))

    async def forget(self, ended_before_ms: int) -> None:
        """Delete the rows of publications that ended before ``ended_before_ms`` and hold
        no source any more."""
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.delete(rows).where(
                    rows.c.stage.in_(ENDED),
                    rows.c.held_source == "",
                    rows.c.update_ms < ended_before_ms,
                )
            )
