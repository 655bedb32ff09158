"""The catalog's feed of titles, which search indexes (search keeps an index of its own).

The catalog's database is the source: search reads every title through ``ListTitles`` at
start, and again every ``RESYNC_S``. In between, a title ``CreateTitle`` adds is announced
on a Redis stream (one key, so a Redis Cluster holds it in one slot), which search reads
with a blocking ``XREAD``: a new title is searchable within moments. An announcement lost
(Redis down at the create, or restarted empty) is repaired by the next full read, which
also runs after every failure of either Redis or the catalog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kernel.outage import OutageLog
from kernel.rpc.clients import RpcChannelFactory
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

STREAM = "lm:catalog:created"
STREAM_MAX = 10_000  # announcements kept: a reader further behind reads everything again
RESYNC_S = 60.0
BLOCK_MS = 5_000
RETRY_S = 1.0
PAGE = 100


async def announce(redis: aioredis.Redis | None, title: pb.Title) -> None:
    """Tell search about a title just stored; best effort (the next full read repairs)."""
    if redis is None:
        return
    try:
        await redis.xadd(
            STREAM, {"title": title.SerializeToString()}, maxlen=STREAM_MAX, approximate=True
        )
    except RedisError as exc:
        log.info(
            "announcing %s failed (%s); search finds it at its next full read", title.name, exc
        )


class CatalogFeed:
    """Search's side: every catalog title into ``index`` (a callable taking titles)."""

    def __init__(
        self,
        factory: RpcChannelFactory,
        catalog_target: str,
        redis: aioredis.Redis | None,
        index: Callable[[list[pb.Title]], None],
    ) -> None:
        self.stub = factory.stub(pb_grpc.CatalogServiceStub, catalog_target)
        self.redis, self.index = redis, index
        self.synced = asyncio.Event()  # set after the first full read
        self.outage = OutageLog("the catalog feed", log)

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except (grpc.aio.AioRpcError, RedisError, OSError) as exc:
                self.outage.failed(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        """Note where the stream ends, read everything, then follow the stream until the
        next full read is due (what was created in between is in both: indexed twice)."""
        last = await self._stream_end()
        await self.read_all()
        self.outage.succeeded()
        self.synced.set()
        deadline = time.monotonic() + RESYNC_S
        while time.monotonic() < deadline:
            if self.redis is None:
                await asyncio.sleep(deadline - time.monotonic())
                return
            found: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = (
                await self.redis.xread({STREAM: last}, block=BLOCK_MS)  # type: ignore[assignment]
            )
            for _stream, entries in found:
                for entry_id, fields in entries:
                    self.index([pb.Title.FromString(fields[b"title"])])
                    last = entry_id

    async def _stream_end(self) -> bytes | str:
        if self.redis is None:
            return "$"
        newest: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrevrange(STREAM, count=1)  # type: ignore[assignment]
        return newest[0][0] if newest else "0-0"

    async def read_all(self) -> None:
        token = ""
        while True:
            page = await self.stub.ListTitles(
                pb.ListTitlesRequest(page_size=PAGE, page_token=token)
            )
            self.index(list(page.titles))
            token = page.next_page_token
            if not token:
                return
