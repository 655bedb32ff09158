"""CatalogService.PublishVodTitle / GetVodPublication: an operator publishes a mezzanine from
the object store as a title and follows its progress, on a real gRPC server with a real
encode (a one-second 160x90 lavfi clip, so each publication takes a few seconds). Bad input
is refused with a reason; a failed publication leaves nothing published and can be retried;
publications outlive a catalog restart (on SQLite and PostgreSQL); an uploaded source is
deleted once it has served, or kept for a retry and deleted later; only operators may
call."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from kernel.clock import now_ms
from kernel.objectstore import LocalStore
from kernel.rpc import credentials
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.process import serve
from kernel.rpc.server import RunningServer
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from services.catalog.publication_records import PublicationRecords
from services.catalog.service import CatalogService
from services.catalog.vod import ABANDONED, STOPPED, Upkeep
from tests.conftest import bearer
from tests.services.conftest import Metadata, Presenting, Start, expect_error

DONE, FAILED = pb.VOD_PUBLICATION_STAGE_DONE, pb.VOD_PUBLICATION_STAGE_FAILED
SOURCE = "uploads/clip/source"


def tiny_clip(path: Path, seconds: int = 1) -> Path:
    """``seconds`` of lavfi bars and tone, 160x90 H.264 + AAC in MP4: an operator's upload."""
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-f", "lavfi", "-i", "sine"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-t", str(seconds)]
    subprocess.run(["ffmpeg", "-v", "error", *lavfi, *codecs, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_clip(tmp_path_factory.mktemp("vod") / "clip.mp4").read_bytes()


@pytest.fixture
async def objects(tmp_path: Path, clip: bytes) -> LocalStore:
    store = LocalStore(tmp_path / "objects")
    await store.put(SOURCE, clip)
    return store


async def catalog(start: Start, objects: LocalStore, **options: Any) -> RunningServer:
    return await start(CatalogService(vod_store=str(objects.root), **options))


def stub_of(running: RunningServer, factory: RpcChannelFactory, auth: Metadata) -> Any:
    return Presenting(factory.stub(pb_grpc.CatalogServiceStub, running.target), auth)


async def followed(stub: Any, name: str) -> list[pb.VodPublication]:
    """Every state ``GetVodPublication`` shows until the publication ends (polled, as a
    console polls it)."""
    seen: list[pb.VodPublication] = []
    async with asyncio.timeout(90):
        while not seen or seen[-1].stage not in (DONE, FAILED):
            request = pb.GetVodPublicationRequest(name=name)
            seen.append((await stub.GetVodPublication(request)).publication)
            await asyncio.sleep(0.05)
    return seen


def publish(title_id: str, source: str = SOURCE) -> pb.PublishVodTitleRequest:
    return pb.PublishVodTitleRequest(
        title_id=title_id, display_title=f"The {title_id}", source_object=source
    )


async def test_an_operator_publishes_a_stored_clip_and_follows_its_progress(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata, objects: LocalStore
) -> None:
    stub = stub_of(await catalog(start, objects), factory, operator_auth)
    started = (await stub.PublishVodTitle(publish("bars"))).publication
    assert started.name.startswith("vodPublications/") and started.title_id == "bars"
    assert started.stage == pb.VOD_PUBLICATION_STAGE_QUEUED
    # the encode runs beside the event loop: the service answers at once meanwhile
    began = time.monotonic()
    await stub.GetTitle(pb.GetTitleRequest(name="titles/orbital-decay"), timeout=2)
    assert time.monotonic() - began < 1.0
    seen = await followed(stub, started.name)
    fractions = [p.fraction_done for p in seen]
    assert fractions == sorted(fractions), fractions  # progress never goes back
    stages = {p.stage for p in seen}
    assert pb.VOD_PUBLICATION_STAGE_ENCODE in stages or pb.VOD_PUBLICATION_STAGE_UPLOAD in stages
    done = seen[-1]
    assert done.stage == DONE, done.error_message
    assert done.fraction_done == 1.0 and not done.error_code
    assert done.title.name == "titles/bars" and done.title.display_title == "The bars"
    assert done.title.duration_seconds == 1
    listed = (await stub.GetTitle(pb.GetTitleRequest(name="titles/bars"))).title
    assert listed == done.title
    assert await objects.size("vod/bars/manifest.mpd")
    assert await objects.size(SOURCE) is None  # the title stands on its own media now
    again = await expect_error(
        stub.PublishVodTitle(publish("bars")), grpc.StatusCode.ALREADY_EXISTS
    )
    assert "titles/bars already exists" in (again.details() or "")


async def test_bad_requests_are_refused_with_the_reason(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata, objects: LocalStore
) -> None:
    stub = stub_of(await catalog(start, objects, vod_max_bytes=1000), factory, operator_auth)
    huge = await expect_error(
        stub.PublishVodTitle(publish("huge")), grpc.StatusCode.INVALID_ARGUMENT, "source_object"
    )
    assert "over the limit of 1000 bytes" in (huge.details() or "")
    unknown = await expect_error(
        stub.PublishVodTitle(publish("x", "uploads/none/source")), grpc.StatusCode.NOT_FOUND
    )
    assert "uploads/none/source" in (unknown.details() or "")
    await expect_error(
        stub.PublishVodTitle(publish("orbital-decay")), grpc.StatusCode.ALREADY_EXISTS
    )
    cases = [
        (publish("Bad Id"), "title_id"),
        (publish("x", "../etc/passwd"), "source_object"),
        (publish("x", ""), "source_object"),
        (pb.PublishVodTitleRequest(title_id="x", source_object=SOURCE), "display_title"),
    ]
    for request, field in cases:
        await expect_error(stub.PublishVodTitle(request), grpc.StatusCode.INVALID_ARGUMENT, field)
    await expect_error(
        stub.GetVodPublication(pb.GetVodPublicationRequest(name="vodPublications/nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stub.GetVodPublication(pb.GetVodPublicationRequest(name="titles/x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name",
    )


async def test_a_source_that_is_no_video_fails_leaving_nothing_and_a_retry_publishes(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    objects: LocalStore,
    clip: bytes,
) -> None:
    stub = stub_of(await catalog(start, objects), factory, operator_auth)
    await objects.put("uploads/notes/source", b"these are meeting notes, not a video\n" * 50)
    await objects.put("uploads/cut/source", clip[: len(clip) // 3])  # truncated: no index
    for source in ("uploads/notes/source", "uploads/cut/source"):
        started = (await stub.PublishVodTitle(publish("retried", source))).publication
        failed = (await followed(stub, started.name))[-1]
        assert failed.stage == FAILED and failed.error_code == "INVALID_ARGUMENT", failed
        assert "not a readable video" in failed.error_message or "no video" in (
            failed.error_message
        ), failed.error_message
        assert await objects.names("vod/retried") == []
        assert await objects.size(source) is None  # no retry of it could succeed
        await expect_error(
            stub.GetTitle(pb.GetTitleRequest(name="titles/retried")), grpc.StatusCode.NOT_FOUND
        )
    started = (await stub.PublishVodTitle(publish("retried"))).publication
    assert (await followed(stub, started.name))[-1].stage == DONE


async def test_a_title_taken_during_the_encode_is_not_published_twice(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata, objects: LocalStore
) -> None:
    """Another operator adds the id while the encode runs: the catalog refuses it once the
    media is stored, and the encoder takes its upload back."""
    stub = stub_of(await catalog(start, objects), factory, operator_auth)
    started = (await stub.PublishVodTitle(publish("raced"))).publication
    movie = pb.Title(kind=pb.TITLE_KIND_MOVIE, display_title="First")
    await stub.CreateTitle(pb.CreateTitleRequest(title_id="raced", title=movie))
    ended = (await followed(stub, started.name))[-1]
    assert ended.stage == FAILED and ended.error_code == "ALREADY_EXISTS", ended
    assert await objects.names("vod/raced") == []
    title = (await stub.GetTitle(pb.GetTitleRequest(name="titles/raced"))).title
    assert title.display_title == "First"
    assert await objects.size(SOURCE)  # kept: the operator may publish it under another id


async def test_a_source_kept_for_a_retry_is_deleted_after_its_keep(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata, objects: LocalStore
) -> None:
    """A failure that is not the source's fault keeps it only ``source_keep_s``."""
    upkeep = Upkeep(flush_s=0.05, source_keep_s=0.0, sweep_s=0.0)
    stub = stub_of(await catalog(start, objects, vod_upkeep=upkeep), factory, operator_auth)
    started = (await stub.PublishVodTitle(publish("orbital"))).publication
    movie = pb.Title(kind=pb.TITLE_KIND_MOVIE, display_title="First")
    await stub.CreateTitle(pb.CreateTitleRequest(title_id="orbital", title=movie))
    assert (await followed(stub, started.name))[-1].error_code == "ALREADY_EXISTS"
    async with asyncio.timeout(10):  # the sweep runs every flush (each 0.05 s) here
        while await objects.size(SOURCE) is not None:
            await asyncio.sleep(0.05)


async def test_publications_outlive_a_catalog_restart(
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    objects: LocalStore,
    clip: bytes,
    any_database: str,
) -> None:
    """A finished publication still answers after a restart; one in flight when the catalog
    stopped answers FAILED, retryable, and its source is still there to retry with."""
    first = CatalogService(any_database, vod_store=str(objects.root))
    running = await serve(first)
    try:
        stub = stub_of(running, factory, operator_auth)
        done = (
            await followed(stub, (await stub.PublishVodTitle(publish("one"))).publication.name)
        )[-1]
        assert done.stage == DONE, done.error_message
        await objects.put("uploads/two/source", clip)
        cut = (await stub.PublishVodTitle(publish("two", "uploads/two/source"))).publication
    finally:
        await running.stop(0)
        await first.close()
    second = CatalogService(any_database, vod_store=str(objects.root))
    running = await serve(second)
    try:
        stub = stub_of(running, factory, operator_auth)
        after = await stub.GetVodPublication(pb.GetVodPublicationRequest(name=done.name))
        assert after.publication == done
        stopped = await stub.GetVodPublication(pb.GetVodPublicationRequest(name=cut.name))
        assert stopped.publication.stage == FAILED, stopped
        assert stopped.publication.error_code == "UNAVAILABLE"
        assert stopped.publication.error_message == STOPPED
        assert await objects.names("vod/two") == []
        retried = (await stub.PublishVodTitle(publish("two", "uploads/two/source"))).publication
        assert (await followed(stub, retried.name))[-1].stage == DONE
    finally:
        await running.stop(0)
        await second.close()


async def test_a_publication_whose_catalog_died_is_failed_once_its_lease_lapses(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    objects: LocalStore,
    database_url: str,
) -> None:
    """A catalog killed mid-publication never marks it: its row, unwritten past the lease,
    is marked FAILED by the next catalog that sweeps."""
    dead = CatalogService(database_url, vod_store=str(objects.root))
    await dead.store.migrate()
    records = PublicationRecords(dead.engine)
    rows = {}
    for title_id, written_ms in (("late", now_ms() - 60_000), ("alive", now_ms())):
        rows[title_id] = pb.VodPublication(
            name=f"vodPublications/{title_id}",
            title_id=title_id,
            source_object=SOURCE,
            stage=pb.VOD_PUBLICATION_STAGE_ENCODE,
        )
        await records.add(rows[title_id], "a-catalog-that-died", written_ms)
    await dead.close()
    upkeep = Upkeep(lease_s=30.0)
    running = await start(
        CatalogService(database_url, vod_store=str(objects.root), vod_upkeep=upkeep)
    )
    stub = stub_of(running, factory, operator_auth)
    read = pb.GetVodPublicationRequest(name="vodPublications/late")
    late = (await stub.GetVodPublication(read)).publication
    assert late.stage == FAILED and late.error_code == "UNAVAILABLE", late
    assert late.error_message == ABANDONED
    read = pb.GetVodPublicationRequest(name="vodPublications/alive")
    assert (await stub.GetVodPublication(read)).publication == rows["alive"]


async def test_only_operators_publish_or_read_publications(
    start: Start, factory: RpcChannelFactory, objects: LocalStore, credential_key: Any
) -> None:
    running = await catalog(start, objects)
    service = bearer(credentials.mint(credential_key, "service", "search"))
    read = pb.GetVodPublicationRequest(name="vodPublications/x")
    for auth, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("not-a-token"), grpc.StatusCode.UNAUTHENTICATED),
        (service, grpc.StatusCode.PERMISSION_DENIED),
    ):
        stub = stub_of(running, factory, auth)
        await expect_error(stub.PublishVodTitle(publish("x")), code)
        await expect_error(stub.GetVodPublication(read), code)
    assert await objects.names("vod") == []
