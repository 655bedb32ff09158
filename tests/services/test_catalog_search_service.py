"""Catalog and search over the seeded demo catalog: gets, batches, pages, FTS5 ranking."""

from __future__ import annotations

import grpc

from kernel.rpc.clients import RpcChannelFactory
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from livemesh.search.v1 import search_pb2 as spb
from livemesh.search.v1 import search_pb2_grpc as spb_grpc
from services.catalog.service import CatalogService
from services.search.service import SearchService
from tests.services.conftest import Start, expect_error


async def test_catalog_get_batch_list_and_pages(start: Start, factory: RpcChannelFactory) -> None:
    running = await start(CatalogService())
    stub = factory.stub(pb_grpc.CatalogServiceStub, running.target)
    demo = (await stub.GetTitle(pb.GetTitleRequest(name="titles/demo"))).title
    assert demo.kind == pb.TITLE_KIND_LIVE_EVENT and demo.live_channel == "channels/demo"

    batch = await stub.BatchGetTitles(
        pb.BatchGetTitlesRequest(names=["titles/orbital-decay", "titles/nope", "titles/demo"])
    )
    assert [t.name for t in batch.titles] == ["titles/orbital-decay", "titles/demo"]
    assert list(batch.missing) == ["titles/nope"]

    episodes, token = [], ""
    while True:
        page = await stub.ListTitles(
            pb.ListTitlesRequest(parent="titles/deep-current-s2", page_size=2, page_token=token)
        )
        episodes += [t.episode_number for t in page.titles]
        token = page.next_page_token
        if not token:
            break
    assert episodes == [1, 2, 3]
    seasons = await stub.ListTitles(pb.ListTitlesRequest(kind=pb.TITLE_KIND_SEASON))
    assert [t.season_number for t in seasons.titles] == [1, 2]


async def test_catalog_bad_input(start: Start, factory: RpcChannelFactory) -> None:
    running = await start(CatalogService())
    stub = factory.stub(pb_grpc.CatalogServiceStub, running.target)
    await expect_error(
        stub.GetTitle(pb.GetTitleRequest(name="titles/missing")), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stub.GetTitle(pb.GetTitleRequest(name="movies/x")), grpc.StatusCode.INVALID_ARGUMENT, "name"
    )
    await expect_error(
        stub.GetTitle(pb.GetTitleRequest()), grpc.StatusCode.INVALID_ARGUMENT, "name"
    )
    await expect_error(
        stub.BatchGetTitles(pb.BatchGetTitlesRequest()), grpc.StatusCode.INVALID_ARGUMENT, "names"
    )
    await expect_error(
        stub.BatchGetTitles(pb.BatchGetTitlesRequest(names=["titles/a", "x"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "names[1]",
    )
    await expect_error(
        stub.ListTitles(pb.ListTitlesRequest(page_size=1000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )
    await expect_error(
        stub.ListTitles(pb.ListTitlesRequest(kind=99)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
        "kind",
    )


async def test_search_ranks_and_matches_prefixes(start: Start, factory: RpcChannelFactory) -> None:
    catalog = await start(CatalogService())
    running = await start(SearchService(factory, catalog.target))
    stub = factory.stub(spb_grpc.SearchServiceStub, running.target)
    harbor = await stub.SearchTitles(spb.SearchTitlesRequest(query="harbor"))
    names = [r.title for r in harbor.results]
    # both titles say "harbor"; the one with it in the title outranks the one with it in the
    # synopsis only (there is none), and all hits carry a snippet and a score
    assert set(names) == {"titles/midnight-harbor", "titles/harbor-lights"}
    assert all(r.score > 0 for r in harbor.results)
    assert harbor.results[0].score >= harbor.results[1].score

    typed = await stub.SearchTitles(spb.SearchTitlesRequest(query="orbit"))  # as you type
    assert [r.title for r in typed.results] == ["titles/orbital-decay"]
    live = await stub.SearchTitles(spb.SearchTitlesRequest(query="demo li"))
    assert live.results[0].title == "titles/demo"
    assert live.results[0].kind == "TITLE_KIND_LIVE_EVENT"
    # title words outrank synopsis words: "signal" is in one title, "radio" only in a synopsis
    ranked = await stub.SearchTitles(spb.SearchTitlesRequest(query="storm"))
    assert ranked.results[0].title == "titles/cold-front"
    assert "[" in ranked.results[0].snippet

    page1 = await stub.SearchTitles(spb.SearchTitlesRequest(query="deep", page_size=3))
    page2 = await stub.SearchTitles(
        spb.SearchTitlesRequest(query="deep", page_size=3, page_token=page1.next_page_token)
    )
    seen = [r.title for r in page1.results] + [r.title for r in page2.results]
    assert len(seen) == len(set(seen)) > 3


async def test_search_bad_input(start: Start, factory: RpcChannelFactory) -> None:
    catalog = await start(CatalogService())
    running = await start(SearchService(factory, catalog.target))
    stub = factory.stub(spb_grpc.SearchServiceStub, running.target)
    await expect_error(
        stub.SearchTitles(spb.SearchTitlesRequest()), grpc.StatusCode.INVALID_ARGUMENT, "query"
    )
    await expect_error(
        stub.SearchTitles(spb.SearchTitlesRequest(query="!!! ???")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "query",
    )
    # FTS5 syntax in the query is taken as words, never as operators
    quoted = await stub.SearchTitles(spb.SearchTitlesRequest(query='harbor" OR NEAR(x'))
    assert quoted.results == []
    await expect_error(
        stub.SearchTitles(spb.SearchTitlesRequest(query="x" * 201)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "query",
    )
    await expect_error(
        stub.SearchTitles(spb.SearchTitlesRequest(query="a", page_token="bad")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
