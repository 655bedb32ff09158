"""Live to VOD: a real packager channel archived into a real object store (a directory and
moto's S3 server) as it runs, published as a title the moment it goes off air, and decoded
by FFmpeg through the origin's ``/vod/`` routes.

Waits are on the archiver's own progress (:meth:`Archiver.wait_for`) and the channel's
chunk events; the timeouts are upper bounds only.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from lxml import etree

from kernel.channel_config_store import put_channel_config
from kernel.epoch import Epoch, Representation
from kernel.objectstore import LocalStore, ObjectStore
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.process import serve
from live.archive import Archiver
from live.archive_title import (
    EventTitle,
    event_title,
    init_object,
    longest_run,
    publish_event,
    segment_object,
)
from live.origin import build_app
from live.state import ChannelStore
from live.vod.publish import manifest_name
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from services.catalog.service import CatalogService
from tests.live_helpers import running_channel, small_config, wait_for_segments
from tests.objectstore_helpers import moto_endpoint, s3_store
from tests.test_edge_integration import ROOT
from tests.test_mpd import dash_schema  # noqa: F401 (a fixture)
from tests.test_vod_title import lavfi_clip

pytestmark = pytest.mark.timeout(120)

WAIT_S = 60


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store: ObjectStore
    if request.param == "local":
        store = LocalStore(tmp_path / "objects")
    else:
        store = s3_store(request.getfixturevalue("moto"))
    yield store
    await store.close()


@contextlib.asynccontextmanager
async def archiving(
    live: ChannelStore, objects: ObjectStore, **options: Any
) -> AsyncIterator[Archiver]:
    """An archiver following the channel for the body of the ``async with``."""
    archiver = Archiver(live, objects, **options)
    following = asyncio.create_task(archiver.run())
    try:
        yield archiver
    finally:
        following.cancel()


class Announced:
    """What the archiver handed on as published titles, with an event per title."""

    def __init__(self) -> None:
        self.titles: list[EventTitle] = []
        self.event = asyncio.Event()

    async def __call__(self, title: EventTitle) -> None:
        self.titles.append(title)
        self.event.set()


@pytest.fixture
async def served(redis: aioredis.Redis, objects: ObjectStore) -> AsyncIterator[str]:
    """An origin serving the store's titles; its base URL."""
    server = TestServer(build_app(redis, vod_store=objects), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def decoded_times(url: str, stream: str) -> list[float]:
    """Presentation times (s) of every frame FFmpeg decodes of a stream of the title."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
         "frame=pts_time", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=WAIT_S, check=True,
    )  # fmt: skip
    return [float(line.strip(",")) for line in done.stdout.split()]


async def test_a_live_event_is_archived_as_it_airs_and_is_a_title_once_off_air(
    redis: aioredis.Redis,
    objects: ObjectStore,
    served: str,
    dash_schema: etree.XMLSchema,  # noqa: F811
) -> None:
    config = small_config("arch")
    live = ChannelStore(redis, config.name)
    announced = Announced()
    async with archiving(live, objects, ended=announced) as archiver:
        async with running_channel(live, config) as channel:
            assert channel.epoch is not None
            epoch = channel.epoch
            title = event_title(config.name, epoch.id)
            await asyncio.wait_for(archiver.wait_for(epoch.id, 2), WAIT_S)
            # archived while on air, before the title exists
            assert (await live.current_epoch()) == epoch
            for rep in epoch.representations:
                assert await objects.size(init_object(title, rep.id))
                for n in range(3):
                    stored = await objects.get(segment_object(title, rep.id, n))
                    chunks, _ = await live.chunks(epoch.id, rep.id, n)
                    assert stored == b"".join(chunks)
            assert await objects.size(manifest_name(title)) is None
        await asyncio.wait_for(announced.event.wait(), WAIT_S)
    (published,) = announced.titles
    assert published.title == title and published.first == 0 and published.count >= 3
    mpd = etree.fromstring(await objects.get(manifest_name(title)))
    dash_schema.assertValid(mpd)
    assert mpd.get("type") == "static"
    assert mpd.get("mediaPresentationDuration") == f"PT{published.count}S"

    url = f"{served}/vod/{title}/manifest.mpd"
    video = await asyncio.to_thread(decoded_times, url, "v:0")
    # every segment decodes (each starts with a frame at n·D, though a loaded encoder
    # skips frames inside one), from the title's time 0 to its last segment
    assert video[0] == 0.0
    assert published.count - 1 <= max(video) < published.count
    assert len(await asyncio.to_thread(decoded_times, url, "a:0")) > 0


class GatedStore(LocalStore):
    """A real directory store whose media puts wait on a gate: a store that is slow."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def put(self, name: str, body: bytes) -> None:
        if name.endswith(".m4s"):
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await self.gate.wait()
            self.in_flight -= 1
        await super().put(name, body)


async def test_a_slow_store_holds_back_the_archiver_not_the_channel(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    config = small_config("slow")
    live = ChannelStore(redis, config.name)
    objects = GatedStore(tmp_path)
    async with (
        archiving(live, objects, in_flight=2) as archiver,
        running_channel(live, config) as channel,
    ):
        assert channel.epoch is not None
        epoch, reps = channel.epoch, [r.id for r in channel.epoch.representations]
        # the channel publishes four whole segments while no segment can be stored
        await asyncio.wait_for(wait_for_segments(live, epoch.id, reps, 5), WAIT_S)
        assert 0 < objects.most_in_flight <= 2  # holding at most two segments
        title = event_title(config.name, epoch.id)
        assert await objects.names(f"vod/{title}") == sorted(
            [f"vod/{title}/archive.json"] + [init_object(title, r) for r in reps]
        )
        objects.gate.set()
        await asyncio.wait_for(archiver.wait_for(epoch.id, 4), WAIT_S)
        for rep in reps:
            for n in range(5):
                assert await objects.size(segment_object(title, rep, n))


async def test_an_operator_publishes_an_event_while_it_airs(
    redis: aioredis.Redis,
    objects: ObjectStore,
    dash_schema: etree.XMLSchema,  # noqa: F811
) -> None:
    """The call makes a title of what is archived so far; the end of the event keeps it."""
    config = small_config("op")
    live = ChannelStore(redis, config.name)
    announced = Announced()
    async with archiving(live, objects, ended=announced) as archiver:
        async with running_channel(live, config) as channel:
            assert channel.epoch is not None
            title = event_title(config.name, channel.epoch.id)
            await asyncio.wait_for(archiver.wait_for(channel.epoch.id, 1), WAIT_S)
            published = await publish_event(objects, title)
            assert published.first == 0 and published.count >= 2
            manifest = await objects.get(manifest_name(title))
            dash_schema.assertValid(etree.fromstring(manifest))
            await asyncio.wait_for(archiver.wait_for(channel.epoch.id, published.count), WAIT_S)
        await asyncio.wait_for(archiver.wait_for(channel.epoch.id, 10**6), WAIT_S)
    assert announced.titles == []  # the operator's title stands as published
    assert await objects.get(manifest_name(title)) == manifest


@pytest.mark.parametrize(
    ("numbers", "run"),
    [({0, 1, 2}, (0, 3)), ({0, 1, 3, 4, 5}, (3, 3)), ({4}, (4, 1)), (set(), (0, 0))],
)
def test_the_title_is_the_longest_unbroken_run(numbers: set[int], run: tuple[int, int]) -> None:
    assert longest_run(numbers) == run


async def livemesh_vod(*args: str) -> tuple[int, str]:
    """``livemesh vod ...`` as a process (the test's loop keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "command.cli", "vod", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_the_operator_call_publishes_an_ended_event_into_the_catalog(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """An event that ended while no archiver was there to publish it: ``livemesh vod
    publish-event`` makes it a title and a catalog entry; an unknown event is refused."""
    config = small_config("late")
    live, root = ChannelStore(redis, config.name), tmp_path / "store"
    objects = LocalStore(root)
    async with running_channel(live, config) as channel:
        assert channel.epoch is not None
        epoch_id = channel.epoch.id
        async with archiving(live, objects) as archiver:  # it goes before the event ends
            await asyncio.wait_for(archiver.wait_for(epoch_id, 1), WAIT_S)
    service = CatalogService()
    running = await serve(service)
    factory = RpcChannelFactory()
    common = ["--store", str(root), "--catalog", running.target]
    try:
        status, output = await livemesh_vod("publish-event", "late", "--epoch", "1", *common)
        assert status == 1 and "no archived event" in output
        status, output = await livemesh_vod("publish-event", "late", "--epoch", epoch_id, *common)
        assert status == 0, output
        title_id = event_title("late", epoch_id)
        stub = factory.stub(pb_grpc.CatalogServiceStub, running.target)
        title = (await stub.GetTitle(pb.GetTitleRequest(name=f"titles/{title_id}"))).title
        assert title.kind == pb.TITLE_KIND_MOVIE and title.display_title.startswith("late live")
        assert title.duration_seconds >= 2
        assert await objects.size(manifest_name(title_id))
    finally:
        await factory.close()
        await running.stop(0)
        await service.close()


async def test_an_event_that_ends_with_nothing_archived_makes_no_title(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """On air and off again before a segment was whole: logged, no title, archiver goes on."""
    config = small_config("blip")
    await put_channel_config(redis, config)
    live, objects = ChannelStore(redis, config.name), LocalStore(tmp_path)
    video = Representation("v1", "video", "avc1.64001e", 600_000, 15360, 640, 360, 30)
    epoch = Epoch("1000", 1000, (video,))
    await live.start_epoch(epoch, {"v1": b"init"}, config.window_s)
    await live.end_epoch(epoch)
    archiver = Archiver(live, objects)
    await archiver.segment_ended(epoch.id)
    await asyncio.wait_for(archiver.wait_for(epoch.id, 0), WAIT_S)  # closed
    title = event_title(config.name, epoch.id)
    assert await objects.size(manifest_name(title)) is None
    assert await objects.get(init_object(title, "v1")) == b"init"


async def test_vod_add_refuses_the_id_of_an_event_being_archived(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A title id equal to an airing event's would have its archive cleared as an abandoned
    upload: ``livemesh vod add`` refuses it, naming the clash, and the archive is intact."""
    config = small_config("clash")
    await put_channel_config(redis, config)
    live, root = ChannelStore(redis, config.name), tmp_path / "store"
    objects = LocalStore(root)
    video = Representation("v1", "video", "avc1.64001e", 600_000, 15360, 640, 360, 30)
    epoch = Epoch("2000", 2000, (video,))
    await live.start_epoch(epoch, {"v1": b"init"}, config.window_s)
    await Archiver(live, objects).segment_ended(epoch.id)  # on air: archiving has begun
    title = event_title(config.name, epoch.id)
    archived = sorted(await objects.names(f"vod/{title}"))
    assert archived == [f"vod/{title}/archive.json", init_object(title, "v1")]
    clip = lavfi_clip(tmp_path / "clip.mkv", "testsrc2")
    status, output = await livemesh_vod("add", str(clip), "--title", title, "--store", str(root))
    assert status == 1
    assert "already exists" in output and repr(title) in output and "archived" in output
    assert sorted(await objects.names(f"vod/{title}")) == archived
    assert await objects.get(init_object(title, "v1")) == b"init"
