"""The catalog's records in the database (PostgreSQL and SQLite), read through Redis, and
fed to search: a title outlives its service and Redis, and search finds what was created."""

from __future__ import annotations

import asyncio
import time

import grpc
import sqlalchemy as sa

from kernel.db import connect_database
from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.rpc.clients import RpcChannelFactory
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from livemesh.search.v1 import search_pb2 as spb
from livemesh.search.v1 import search_pb2_grpc as spb_grpc
from services.catalog.feed import RESYNC_S
from services.catalog.seed import demo_titles
from services.catalog.service import CatalogService
from services.catalog.store import MIGRATIONS, REDIS_KEY
from services.search.service import SearchService
from tests.db_helpers import proxied_postgres
from tests.services.conftest import Metadata, Presenting, Start, expect_error

MOVIE = pb.Title(kind=pb.TITLE_KIND_MOVIE, display_title="Quasar Lullaby", duration_seconds=3)
SEARCH_WAIT_S = 5.0  # well under RESYNC_S: a find within it came through the stream


async def _create(stub: pb_grpc.CatalogServiceStub, title_id: str) -> pb.Title:
    request = pb.CreateTitleRequest(title_id=title_id, title=MOVIE)
    return (await stub.CreateTitle(request)).title


async def _search_until_found(stub: spb_grpc.SearchServiceStub, query: str, name: str) -> float:
    """Seconds until ``query`` finds ``name`` (the index is fed in the background; this
    asks again until it does, up to SEARCH_WAIT_S)."""
    started = time.monotonic()
    while time.monotonic() - started < SEARCH_WAIT_S:
        found = await stub.SearchTitles(spb.SearchTitlesRequest(query=query))
        if name in [r.title for r in found.results]:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"search did not find {name} within {SEARCH_WAIT_S} s")


async def test_titles_live_in_the_database_and_outlive_the_service(
    any_database: str, start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    first = CatalogService(any_database)
    running = await start(first)
    stub = Presenting(factory.stub(pb_grpc.CatalogServiceStub, running.target), operator_auth)
    created = await _create(stub, "quasar")
    await running.stop(0)
    await first.close()

    again = await start(CatalogService(any_database))  # a restart: migrations, no new seed
    stub = Presenting(factory.stub(pb_grpc.CatalogServiceStub, again.target), operator_auth)
    assert (await stub.GetTitle(pb.GetTitleRequest(name="titles/quasar"))).title == created
    await expect_error(
        stub.CreateTitle(pb.CreateTitleRequest(title_id="quasar", title=MOVIE)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    engine = connect_database(any_database)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(sa.text("SELECT count(*) FROM catalog_titles"))
            versions = await conn.scalar(
                sa.text("SELECT count(*) FROM schema_migrations WHERE component = 'catalog'")
            )
    finally:
        await engine.dispose()
    assert count == len(demo_titles()) + 1
    assert versions == len(MIGRATIONS)  # each applied once, not again at the restart


async def test_a_created_title_is_found_by_search_within_moments(
    redis_url: str, start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    catalog = await start(CatalogService(redis_url=redis_url))
    search = await start(SearchService(factory, catalog.target, redis_url))
    stub = Presenting(factory.stub(pb_grpc.CatalogServiceStub, catalog.target), operator_auth)
    searching = factory.stub(spb_grpc.SearchServiceStub, search.target)
    assert (await searching.SearchTitles(spb.SearchTitlesRequest(query="quasar"))).results == []
    await _create(stub, "quasar")
    assert await _search_until_found(searching, "quasar lull", "titles/quasar") < RESYNC_S


async def test_search_catches_up_on_titles_created_while_it_was_away(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    """A title whose announcement search never read (search was not running) is in its
    index after it starts: the first full read is of the catalog's database."""
    with EmbeddedRedis() as server:
        catalog = await start(CatalogService(redis_url=server.url))
        stub = Presenting(factory.stub(pb_grpc.CatalogServiceStub, catalog.target), operator_auth)
        await _create(stub, "quasar")
        server.restart(empty=True)  # the announcement is gone with Redis's data
        search = await start(SearchService(factory, catalog.target, server.url))
        searching = factory.stub(spb_grpc.SearchServiceStub, search.target)
        found = await searching.SearchTitles(spb.SearchTitlesRequest(query="quasar"))
        assert [r.title for r in found.results] == ["titles/quasar"]


async def test_search_before_its_first_read_of_the_catalog_answers_unavailable(
    start: Start, factory: RpcChannelFactory
) -> None:
    # a catalog that is not there: search starts (after a bounded wait) but says so
    search = await start(SearchService(factory, "127.0.0.1:1"))
    searching = factory.stub(spb_grpc.SearchServiceStub, search.target)
    await expect_error(
        searching.SearchTitles(spb.SearchTitlesRequest(query="demo")), grpc.StatusCode.UNAVAILABLE
    )


async def test_press_play_reads_a_title_from_redis_while_the_database_is_down(
    redis_url: str, start: Start, factory: RpcChannelFactory
) -> None:
    """The read-through cache: a title read once is in Redis, so another catalog instance
    (a cold one, with nothing in its own memory) answers it with the database gone; a
    title in neither answers UNAVAILABLE, not INTERNAL."""
    async with proxied_postgres() as (url, proxy):
        warm = await start(CatalogService(url, redis_url))
        cold = await start(CatalogService(url, redis_url, seed=False))
        stub = factory.stub(pb_grpc.CatalogServiceStub, warm.target)
        demo = (await stub.GetTitle(pb.GetTitleRequest(name="titles/demo"))).title
        redis = redis_client(redis_url)
        try:
            assert await redis.get(REDIS_KEY.format("titles/demo")) == demo.SerializeToString()
        finally:
            await redis.aclose()

        await proxy.cut()
        cold_stub = factory.stub(pb_grpc.CatalogServiceStub, cold.target)
        assert (await cold_stub.GetTitle(pb.GetTitleRequest(name="titles/demo"))).title == demo
        await expect_error(
            cold_stub.GetTitle(pb.GetTitleRequest(name="titles/orbital-decay")),
            grpc.StatusCode.UNAVAILABLE,
        )
        await proxy.start()
        assert (await cold_stub.GetTitle(pb.GetTitleRequest(name="titles/orbital-decay"))).title
