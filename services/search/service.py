"""Search service: SearchTitles, BM25-ranked, prefix match on the last word.

Its index (:mod:`.index`) is its own, fed from the catalog service
(:mod:`services.catalog.feed`): every title at start, then each one ``CreateTitle``
adds, as it is added.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import redis.asyncio as aioredis

from kernel.config import SearchSettings
from kernel.redis_server import redis_client
from kernel.rpc import access, validate
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import Unavailable
from kernel.rpc.process import Service, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.catalog.v1 import catalog_pb2
from livemesh.search.v1 import search_pb2 as pb
from livemesh.search.v1 import search_pb2_grpc as pb_grpc
from services.catalog.feed import CatalogFeed
from services.search.index import SearchIndex

FIRST_READ_WAIT_S = 5.0


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, index: SearchIndex, feed: CatalogFeed) -> None:
        self.index, self.feed = index, feed

    @access.public("the catalog is searched before signing in")
    async def SearchTitles(
        self, request: pb.SearchTitlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchTitlesResponse:
        query = validate.text(request.query, "query", 1, 200)
        size = validate.page_size(request.page_size, 10, 50)
        offset = validate.offset_from_token(request.page_token)
        if not self.feed.synced.is_set():  # an empty index would answer "no such title"
            raise Unavailable("the index is still being read from the catalog")
        hits = self.index.search(query, offset, size + 1)
        return pb.SearchTitlesResponse(
            results=[
                pb.SearchResult(
                    title=h.title.name,
                    display_title=h.title.display_title,
                    snippet=h.snippet,
                    score=h.score,
                    kind=catalog_pb2.TitleKind.Name(h.title.kind),
                )
                for h in hits[:size]
            ],
            next_page_token=validate.next_offset_token(offset, size, len(hits)),
        )


class SearchService(Service):
    """Search over the titles of the catalog at ``catalog_target``; new ones are announced
    on ``redis_url``'s Redis (None: found at the next full read only)."""

    def __init__(
        self, factory: RpcChannelFactory, catalog_target: str, redis_url: str | None = None
    ) -> None:
        self.index = SearchIndex()
        # XREAD blocks its connection: a client of its own, not a shared pool
        self.redis: aioredis.Redis | None = redis_client(redis_url) if redis_url else None
        self.feed = CatalogFeed(factory, catalog_target, self.redis, self.index.put_many)
        self._feeding: asyncio.Task[None] | None = None

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["SearchService"].full_name,
                SearchServicer(self.index, self.feed),
                pb_grpc.add_SearchServiceServicer_to_server,
            )
        ]

    async def start(self) -> None:
        """Feed the index; wait a little for the catalog's titles (a catalog started
        before search is read before search answers), not for ever (one started after)."""
        self._feeding = asyncio.create_task(self.feed.run(), name="search-feed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.feed.synced.wait(), FIRST_READ_WAIT_S)

    async def close(self) -> None:
        if self._feeding is not None:
            self._feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeding
        if self.redis is not None:
            await self.redis.aclose()
        self.index.close()


async def build(settings: SearchSettings, factory: RpcChannelFactory) -> Service:
    return SearchService(factory, settings.catalog_target, settings.required_redis_url())


def main(argv: list[str] | None = None) -> int:
    return service_main(SearchSettings, argv, build, needs_redis=True)
