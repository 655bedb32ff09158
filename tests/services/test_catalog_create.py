"""CatalogService.CreateTitle: operators add published titles; nobody else, and never twice."""

from __future__ import annotations

import grpc

from kernel.rpc.clients import RpcChannelFactory
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from services.catalog.service import CatalogService
from tests.services.conftest import Metadata, Presenting, Start, expect_error

MOVIE = pb.Title(kind=pb.TITLE_KIND_MOVIE, display_title="Bars and Tone", duration_seconds=3)


async def test_an_operator_adds_a_title_once(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    running = await start(CatalogService())
    stub = Presenting(factory.stub(pb_grpc.CatalogServiceStub, running.target), operator_auth)
    request = pb.CreateTitleRequest(title_id="bars", title=MOVIE)
    created = (await stub.CreateTitle(request)).title
    assert created.name == "titles/bars" and created.display_title == "Bars and Tone"
    assert (await stub.GetTitle(pb.GetTitleRequest(name="titles/bars"))).title == created
    await expect_error(stub.CreateTitle(request), grpc.StatusCode.ALREADY_EXISTS)
    # the seeded titles cannot be replaced either
    taken = pb.CreateTitleRequest(title_id="orbital-decay", title=MOVIE)
    await expect_error(stub.CreateTitle(taken), grpc.StatusCode.ALREADY_EXISTS)


async def test_create_title_checks_its_caller_and_fields(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    running = await start(CatalogService())
    anonymous = factory.stub(pb_grpc.CatalogServiceStub, running.target)
    await expect_error(
        anonymous.CreateTitle(pb.CreateTitleRequest(title_id="x", title=MOVIE)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    stub = Presenting(anonymous, operator_auth)
    series = pb.Title(kind=pb.TITLE_KIND_SERIES, display_title="S")
    cases = [
        (pb.CreateTitleRequest(title_id="Bad Id", title=MOVIE), "title_id"),
        (pb.CreateTitleRequest(title_id="x", title=series), "title.kind"),
        (
            pb.CreateTitleRequest(title_id="x", title=pb.Title(kind=pb.TITLE_KIND_MOVIE)),
            "title.display_title",
        ),
        (
            pb.CreateTitleRequest(
                title_id="x",
                title=pb.Title(kind=pb.TITLE_KIND_EPISODE, display_title="E", parent="seasons/1"),
            ),
            "title.parent",
        ),
    ]
    for request, field in cases:
        await expect_error(stub.CreateTitle(request), grpc.StatusCode.INVALID_ARGUMENT, field)
