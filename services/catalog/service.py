"""Catalog service: GetTitle, BatchGetTitles, ListTitles and CreateTitle over the database,
and the operators' VOD publications (PublishVodTitle, GetVodPublication: :mod:`.vod`).

The records are in the relational database (:mod:`services.catalog.store`); a title
``CreateTitle`` adds is announced to search (:mod:`services.catalog.feed`).
"""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from kernel.config import CatalogSettings
from kernel.config.control import DEFAULT_VOD_MAX_BYTES
from kernel.db import EmbeddedDatabase, connect_database
from kernel.objectstore import open_store
from kernel.redis_server import shared_client
from kernel.rpc import access, validate
from kernel.rpc.auth import TokenVerifier, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import AlreadyExists, InvalidArgument, NotFound
from kernel.rpc.process import Service, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from services.catalog.feed import announce
from services.catalog.store import CatalogStore
from services.catalog.vod import Publications, Upkeep

MAX_BATCH = 100
# what CreateTitle adds: titles with media of their own (series and seasons group them,
# live events play a channel)
PUBLISHABLE = (pb.TITLE_KIND_MOVIE, pb.TITLE_KIND_EPISODE)


def title_name(name: str, field: str = "name") -> str:
    validate.parse_name(name, field, "titles")
    return name


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, store: CatalogStore, publications: Publications) -> None:
        self.store = store
        self.publications = publications

    @access.public("the catalog is browsed before signing in")
    async def GetTitle(
        self, request: pb.GetTitleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTitleResponse:
        title = await self.store.get(title_name(request.name))
        if title is None:
            raise NotFound(f"{request.name} not found")
        return pb.GetTitleResponse(title=title)

    @access.public("the catalog is browsed before signing in")
    async def BatchGetTitles(
        self, request: pb.BatchGetTitlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetTitlesResponse:
        if not 1 <= len(request.names) <= MAX_BATCH:
            raise InvalidArgument("names", f"give 1-{MAX_BATCH} names")
        names = [title_name(n, f"names[{i}]") for i, n in enumerate(request.names)]
        found = await self.store.get_many(names)
        return pb.BatchGetTitlesResponse(
            titles=[found[n] for n in names if n in found],
            missing=[n for n in names if n not in found],
        )

    @access.public("the catalog is browsed before signing in")
    async def ListTitles(
        self, request: pb.ListTitlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTitlesResponse:
        if request.parent:
            title_name(request.parent, "parent")
        if request.kind not in pb.TitleKind.values():
            raise InvalidArgument("kind", "unknown title kind")
        size = validate.page_size(request.page_size, 20, 100)
        offset = validate.offset_from_token(request.page_token)
        found = await self.store.list_titles(request.parent, request.kind, offset, size + 1)
        token = validate.next_offset_token(offset, size, len(found))
        return pb.ListTitlesResponse(titles=found[:size], next_page_token=token)

    @access.operator
    async def CreateTitle(
        self, request: pb.CreateTitleRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTitleResponse:
        title_id = validate.resource_id(request.title_id, "title_id")
        if request.title.kind not in PUBLISHABLE:
            raise InvalidArgument("title.kind", "only movies and episodes are published")
        validate.text(request.title.display_title, "title.display_title", 1, 200)
        title = pb.Title()
        title.CopyFrom(request.title)
        title.name = f"titles/{title_id}"
        if title.parent:
            title_name(title.parent, "title.parent")
        if not await self.store.create(title):
            raise AlreadyExists(f"{title.name} already exists")
        await announce(self.store.redis, title)
        return pb.CreateTitleResponse(title=title)

    @access.operator
    async def PublishVodTitle(
        self, request: pb.PublishVodTitleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishVodTitleResponse:
        publication = await self.publications.start(request)
        return pb.PublishVodTitleResponse(publication=publication)

    @access.operator
    async def GetVodPublication(
        self, request: pb.GetVodPublicationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetVodPublicationResponse:
        publication = await self.publications.get(request.name)
        return pb.GetVodPublicationResponse(publication=publication)


class CatalogService(Service):
    """The catalog on ``database_url`` (None: a SQLite file of its own, removed at close),
    its titles cached in and announced on ``redis_url``'s Redis when one is given; operators'
    sources in ``vod_store`` (None: it publishes none) up to ``vod_max_bytes`` are published
    as titles (:mod:`services.catalog.vod`, its rows kept up as ``vod_upkeep`` says);
    ``viewers`` verifies viewers' tokens, so that one sent to an operator's method is
    refused as a viewer's (PERMISSION_DENIED)."""

    def __init__(
        self,
        database_url: str | None = None,
        redis_url: str | None = None,
        seed: bool = True,
        vod_store: str | None = None,
        vod_max_bytes: int = DEFAULT_VOD_MAX_BYTES,
        viewers: TokenVerifier | None = None,
        vod_upkeep: Upkeep | None = None,
    ) -> None:
        self._embedded: EmbeddedDatabase | None = None
        if database_url is None:
            self._embedded = EmbeddedDatabase()
            database_url = self._embedded.url
        self.engine = connect_database(database_url)
        self.redis: aioredis.Redis | None = shared_client(redis_url) if redis_url else None
        self.store = CatalogStore(self.engine, self.redis)
        self.seed = seed
        self.viewers = viewers
        objects = open_store(vod_store) if vod_store else None
        self.publications = Publications(
            objects, vod_store, self.store, vod_max_bytes, upkeep=vod_upkeep
        )

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["CatalogService"].full_name,
                CatalogServicer(self.store, self.publications),
                pb_grpc.add_CatalogServiceServicer_to_server,
                viewers=self.viewers,
            )
        ]

    async def start(self) -> None:
        await self.store.migrate(seed=self.seed)
        await self.publications.begin()

    async def close(self) -> None:
        await self.publications.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self._embedded is not None:
            self._embedded.remove()


async def build(settings: CatalogSettings, factory: RpcChannelFactory) -> Service:
    assert settings.database_url  # the process's embedded SQLite when none is set
    return CatalogService(
        settings.database_url,
        settings.required_redis_url(),
        vod_store=settings.vod_store,
        vod_max_bytes=settings.vod_max_bytes,
        viewers=TokenVerifier(identity_key_loader(factory, settings.identity_target)),
    )


def main(argv: list[str] | None = None) -> int:
    return service_main(CatalogSettings, argv, build, needs_redis=True)
