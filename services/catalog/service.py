"""Catalog service: GetTitle, BatchGetTitles, ListTitles over the embedded store."""

from __future__ import annotations

import argparse

import grpc

from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from services.catalog.store import CatalogStore
from services.common import validate
from services.common.clients import ChannelFactory
from services.common.errors import InvalidArgument, NotFound
from services.common.process import Service, service_main
from services.common.server import ServiceSpec

MAX_BATCH = 100


def title_name(name: str, field: str = "name") -> str:
    validate.parse_name(name, field, "titles")
    return name


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    async def GetTitle(
        self, request: pb.GetTitleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTitleResponse:
        title = self.store.get(title_name(request.name))
        if title is None:
            raise NotFound(f"{request.name} not found")
        return pb.GetTitleResponse(title=title)

    async def BatchGetTitles(
        self, request: pb.BatchGetTitlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetTitlesResponse:
        if not 1 <= len(request.names) <= MAX_BATCH:
            raise InvalidArgument("names", f"give 1-{MAX_BATCH} names")
        names = [title_name(n, f"names[{i}]") for i, n in enumerate(request.names)]
        found = self.store.get_many(names)
        return pb.BatchGetTitlesResponse(
            titles=[found[n] for n in names if n in found],
            missing=[n for n in names if n not in found],
        )

    async def ListTitles(
        self, request: pb.ListTitlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTitlesResponse:
        if request.parent:
            title_name(request.parent, "parent")
        if request.kind not in pb.TitleKind.values():
            raise InvalidArgument("kind", "unknown title kind")
        size = validate.page_size(request.page_size, 20, 100)
        offset = validate.offset_from_token(request.page_token)
        found = self.store.list_titles(request.parent, request.kind, offset, size + 1)
        token = validate.next_offset_token(offset, size, len(found))
        return pb.ListTitlesResponse(titles=found[:size], next_page_token=token)


class CatalogService(Service):
    def __init__(self, db: str = ":memory:") -> None:
        self.store = CatalogStore(db)

    def specs(self) -> list[ServiceSpec]:
        return [ServiceSpec(
            pb.DESCRIPTOR.services_by_name["CatalogService"].full_name,
            CatalogServicer(self.store), pb_grpc.add_CatalogServiceServicer_to_server,
        )]

    async def close(self) -> None:
        self.store.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=":memory:",
                        help="SQLite file (default: in memory, seeded with the demo catalog)")


async def build(args: argparse.Namespace, factory: ChannelFactory) -> Service:
    return CatalogService(args.db)


def main(argv: list[str] | None = None) -> int:
    return service_main("catalog", argv, build, add_arguments)
