"""Search service: SearchTitles, BM25-ranked, prefix match on the last word.

It reads the same store as the catalog (the same SQLite file when ``--db`` names
one; by default its own in-memory copy of the demo catalog).
"""

from __future__ import annotations

import argparse

import grpc

from livemesh.catalog.v1 import catalog_pb2
from livemesh.search.v1 import search_pb2 as pb
from livemesh.search.v1 import search_pb2_grpc as pb_grpc
from services.catalog.service import CatalogService, add_arguments
from services.catalog.store import CatalogStore
from services.common import validate
from services.common.clients import ChannelFactory
from services.common.process import Service, service_main
from services.common.server import ServiceSpec


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    async def SearchTitles(
        self, request: pb.SearchTitlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchTitlesResponse:
        query = validate.text(request.query, "query", 1, 200)
        size = validate.page_size(request.page_size, 10, 50)
        offset = validate.offset_from_token(request.page_token)
        hits = self.store.search(query, offset, size + 1)
        return pb.SearchTitlesResponse(
            results=[
                pb.SearchResult(
                    title=h.title.name, display_title=h.title.display_title, snippet=h.snippet,
                    score=h.score, kind=catalog_pb2.TitleKind.Name(h.title.kind),
                )
                for h in hits[:size]
            ],
            next_page_token=validate.next_offset_token(offset, size, len(hits)),
        )


class SearchService(CatalogService):
    """The catalog's store, served as search."""

    def specs(self) -> list[ServiceSpec]:
        return [ServiceSpec(
            pb.DESCRIPTOR.services_by_name["SearchService"].full_name,
            SearchServicer(self.store), pb_grpc.add_SearchServiceServicer_to_server,
        )]


async def build(args: argparse.Namespace, factory: ChannelFactory) -> Service:
    return SearchService(args.db)


def main(argv: list[str] | None = None) -> int:
    return service_main("search", argv, build, add_arguments)
